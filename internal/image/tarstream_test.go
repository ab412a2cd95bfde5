package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// bigUpperTar returns an upper tar whose files straddle the stream buffer
// and the kernel-copy threshold, with the contents of each file.
func bigUpperTar(t *testing.T) ([]byte, map[string][]byte) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := map[string]int{
		"a/small": 100, "a/edge": kernelCopyMin, "a/big": 3<<20 + 17, "b/mid": kernelCopyMin + 1,
		"b/buf": copyBufSize, "b/huge": 5<<20 + 511, "c/zero": 0, "c/tiny": 1,
	}
	order := []string{"a/small", "a/big", "a/edge", "b/buf", "b/mid", "c/zero", "b/huge", "c/tiny"}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Unix(1_700_000_000, 0)
	must(t, tw.WriteHeader(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt}))
	dirs := map[string]bool{}
	want := map[string][]byte{}
	for _, name := range order {
		if d := filepath.Dir(name); !dirs[d] {
			dirs[d] = true
			must(t, tw.WriteHeader(&tar.Header{Name: "./" + d + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt}))
		}
		b := make([]byte, sizes[name])
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		want[name] = b
		must(t, tw.WriteHeader(&tar.Header{Name: "./" + name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b)), ModTime: mt}))
		_, err := tw.Write(b)
		must(t, err)
	}
	must(t, tw.Close())
	return buf.Bytes(), want
}

// limitedCopier is a RangeCopier over a file that copies at most max
// bytes per call, and refuses (unsupported) from call refuseFrom on (0:
// never).
type limitedCopier struct {
	r          *os.File
	max        int64
	calls      int
	refuseFrom int
}

func (c *limitedCopier) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *limitedCopier) CopyRangeTo(fd int, n int64) (int64, error) {
	c.calls++
	if c.refuseFrom > 0 && c.calls >= c.refuseFrom {
		return 0, errors.ErrUnsupported
	}
	return copyFileRange(int(c.r.Fd()), nil, fd, min(n, c.max))
}

// TestKernelCopiedLayer checks that a layer extracted with its big files'
// contents copied by the kernel (a plain file, a RangeCopier copying in
// pieces, one that gives up midway) equals the one read through memory.
func TestKernelCopiedLayer(t *testing.T) {
	requireRoot(t)
	data, want := bigUpperTar(t)
	ctx := context.Background()
	s, _ := newTestStore(t, BaseConfig{})
	ref, err := s.AddLayerFromUpperTar(ctx, bytes.NewReader(data), nil)
	must(t, err)
	file := filepath.Join(t.TempDir(), "upper.tar")
	must(t, os.WriteFile(file, data, 0o600))
	open := func(t *testing.T) *os.File {
		f, err := os.Open(file)
		must(t, err)
		t.Cleanup(func() { f.Close() })
		return f
	}
	for _, tc := range []struct {
		name      string
		r         func(t *testing.T) io.Reader
		wantCalls int // calls to CopyRangeTo (0: several); -1: not a limitedCopier
	}{
		{"plain file", func(t *testing.T) io.Reader { return open(t) }, -1},
		{"in pieces", func(t *testing.T) io.Reader { return &limitedCopier{r: open(t), max: 100_000} }, 0},
		{"gives up midway", func(t *testing.T) io.Reader { return &limitedCopier{r: open(t), max: 100_000, refuseFrom: 4} }, 4},
		{"refuses", func(t *testing.T) io.Reader { return &limitedCopier{r: open(t), max: 1 << 30, refuseFrom: 1} }, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestStore(t, BaseConfig{})
			r := tc.r(t)
			d, err := s.AddLayerFromUpperTar(ctx, r, nil)
			must(t, err)
			if c, ok := r.(*limitedCopier); ok && (c.calls != tc.wantCalls && tc.wantCalls > 0 || tc.wantCalls == 0 && c.calls < 2) {
				t.Errorf("got %d calls to CopyRangeTo, want %d (0: several)", c.calls, tc.wantCalls)
			}
			if d != ref {
				t.Errorf("got digest %s, want %s (read through memory)", d, ref)
			}
			for name, b := range want {
				got, err := os.ReadFile(filepath.Join(s.LayerPath(d), name))
				must(t, err)
				if !bytes.Equal(got, b) {
					t.Errorf("%s: got %d bytes differing from the %d written", name, len(got), len(b))
				}
			}
		})
	}
}
