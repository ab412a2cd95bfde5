package image

import (
	"encoding/hex"
	"strings"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// Digest names a layer: "sha256:" followed by 64 lowercase hex digits.
type Digest string

const digestPrefix = "sha256:"

// Hex returns the digest's hex part.
func (d Digest) Hex() string { return strings.TrimPrefix(string(d), digestPrefix) }

// String returns the digest as written ("sha256:<hex>").
func (d Digest) String() string { return string(d) }

// Validate returns an ErrInvalidArgument error unless d is well formed.
func (d Digest) Validate() error {
	h, ok := strings.CutPrefix(string(d), digestPrefix)
	if !ok || len(h) != 64 || strings.ToLower(h) != h {
		return errdefs.Invalid("layer digest %q: want sha256:<64 lowercase hex digits>", string(d))
	}
	if _, err := hex.DecodeString(h); err != nil {
		return errdefs.Invalid("layer digest %q: want sha256:<64 lowercase hex digits>", string(d))
	}
	return nil
}

func digestFromSum(sum []byte) Digest { return Digest(digestPrefix + hex.EncodeToString(sum)) }
