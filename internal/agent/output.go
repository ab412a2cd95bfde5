package agent

import (
	"fmt"
)

const (
	// maxEventData is the most output bytes put in one ExecEvent.
	maxEventData = 64 << 10
	// minChunk and maxChunk bound the capacity of a new buffer chunk.
	minChunk = 512
	maxChunk = 64 << 10
)

// outputBuffer holds the retained bytes of one output stream of an exec.
//
// It retains at most limit bytes. Bytes below sent (already sent to some
// reader) may be dropped, oldest first, to make room; bytes at or above sent
// never are: room reports how much may be appended without dropping unsent
// data, and the pipe reader stops reading when it is zero.
//
// Chunks are never modified below their length once appended, so slices
// returned by read stay valid without the lock. Not safe for concurrent use:
// the owning exec's mutex guards it.
type outputBuffer struct {
	limit  int64
	chunks [][]byte
	start  int64 // offset of chunks[0][0]
	end    int64 // offset after the last byte appended
	sent   int64 // highest offset sent to any reader; start <= sent <= end
	closed bool  // no more bytes will be appended
}

// room returns how many bytes may be appended now.
func (b *outputBuffer) room() int64 {
	return b.limit - (b.end - b.sent)
}

// append adds p at the end. The caller ensures len(p) <= room().
func (b *outputBuffer) append(p []byte) {
	b.drop(b.end - b.start + int64(len(p)) - b.limit)
	if n := len(b.chunks); n > 0 {
		last := b.chunks[n-1]
		if cap(last)-len(last) >= len(p) {
			// Writes past len(last) only: readers' slices are unaffected.
			b.chunks[n-1] = append(last, p...)
			b.end += int64(len(p))
			return
		}
	}
	size := minChunk
	if n := len(b.chunks); n > 0 {
		size = 2 * cap(b.chunks[n-1])
	}
	size = min(max(size, minChunk, len(p)), max(maxChunk, len(p)))
	if int64(size) > b.limit {
		size = max(int(b.limit), len(p))
	}
	c := make([]byte, len(p), size)
	copy(c, p)
	b.chunks = append(b.chunks, c)
	b.end += int64(len(p))
}

// drop discards up to n of the oldest bytes, but none at or above sent.
func (b *outputBuffer) drop(n int64) {
	for n > 0 && len(b.chunks) > 0 {
		c := b.chunks[0]
		d := min(int64(len(c)), b.sent-b.start, n)
		if d <= 0 {
			return
		}
		if d == int64(len(c)) {
			b.chunks[0] = nil
			b.chunks = b.chunks[1:]
		} else {
			b.chunks[0] = c[d:]
		}
		b.start += d
		n -= d
	}
}

// read returns up to maxEventData bytes starting at off, or nil when no byte
// at off exists yet. It fails with an out-of-range error when off was
// dropped or lies beyond the end of the stream.
func (b *outputBuffer) read(name string, off int64) ([]byte, error) {
	switch {
	case off < b.start:
		return nil, outOfRange("%s bytes [%d, %d) were dropped to respect the %d-byte buffer limit (they had been sent to a reader); cannot resume at offset %d",
			name, 0, b.start, b.limit, off)
	case off > b.end:
		return nil, outOfRange("%s offset %d is beyond the %d bytes written so far", name, off, b.end)
	case off == b.end:
		return nil, nil
	}
	pos := b.start
	for _, c := range b.chunks {
		if off < pos+int64(len(c)) {
			c = c[off-pos:]
			return c[:min(len(c), maxEventData)], nil
		}
		pos += int64(len(c))
	}
	panic(fmt.Sprintf("agent: output offset %d not found in [%d, %d)", off, b.start, b.end))
}

// markSent records that bytes up to off were sent to a reader. It reports
// whether room grew.
func (b *outputBuffer) markSent(off int64) bool {
	if off <= b.sent {
		return false
	}
	b.sent = min(off, b.end)
	return true
}
