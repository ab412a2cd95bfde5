package agent

import (
	"bytes"
	"errors"
	"testing"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

func TestOutputBuffer(t *testing.T) {
	type step struct {
		op       string // "append N", "sent OFF", "read OFF"
		n        int64
		wantRoom int64
		wantRead int // bytes expected from read; -1: out of range
	}
	tests := []struct {
		name  string
		limit int64
		steps []step
	}{
		{"unsent bytes are kept", 10, []step{
			{"append", 6, 4, 0},
			{"append", 4, 0, 0},
			{"read", 0, 0, 10},
			{"read", 10, 0, 0},
			{"read", 11, 0, -1},
		}},
		{"sent bytes make room", 10, []step{
			{"append", 10, 0, 0},
			{"sent", 4, 4, 0},
			{"append", 4, 0, 0},
			{"read", 0, 0, -1},
			{"read", 4, 0, 10},
			{"read", 3, 0, -1},
		}},
		{"partial chunk drop", 10, []step{
			{"append", 8, 2, 0},
			{"sent", 3, 5, 0},
			{"append", 5, 0, 0},
			{"read", 2, 0, -1},
			{"read", 3, 0, 10},
			{"read", 12, 0, 1},
		}},
		{"large appends", 200000, []step{
			{"append", 70000, 130000, 0},
			{"append", 70000, 60000, 0},
			{"read", 0, 0, 140000},
			{"read", 1, 0, 139999},
			{"sent", 140000, 200000, 0},
			{"append", 100000, 100000, 0},
			{"read", 39999, 0, -1},
			{"read", 40000, 0, 200000},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &outputBuffer{limit: tt.limit}
			var written byte
			for i, s := range tt.steps {
				switch s.op {
				case "append":
					p := make([]byte, s.n)
					for j := range p {
						p[j] = written
						written++
					}
					b.append(p)
				case "sent":
					b.markSent(s.n)
				case "read":
					d, err := readAll(b, s.n)
					if s.wantRead < 0 {
						if !errors.Is(err, errdefs.ErrInvalidArgument) {
							t.Errorf("step %d: read at %d got %v, want out of range", i, s.n, err)
						}
						continue
					}
					if err != nil || len(d) != s.wantRead {
						t.Errorf("step %d: read at %d got %d bytes, %v; want %d", i, s.n, len(d), err, s.wantRead)
					}
					if len(d) > 0 && d[0] != byte(s.n) {
						t.Errorf("step %d: read at %d got first byte %d, want %d", i, s.n, d[0], byte(s.n))
					}
					continue
				}
				if got := b.room(); got != s.wantRoom {
					t.Errorf("step %d (%s %d): got room %d, want %d", i, s.op, s.n, got, s.wantRoom)
				}
				if retained := b.end - b.start; retained > tt.limit {
					t.Errorf("step %d: retained %d bytes, want at most %d", i, retained, tt.limit)
				}
			}
		})
	}
}

// TestOutputBufferStableSlices checks that appending never changes bytes a
// reader already holds.
func TestOutputBufferStableSlices(t *testing.T) {
	b := &outputBuffer{limit: 1 << 20}
	b.append([]byte("abc"))
	held, _ := b.read("stdout", 0)
	b.append(bytes.Repeat([]byte("x"), 1000))
	if string(held) != "abc" {
		t.Errorf("got held slice %q, want %q", held, "abc")
	}
}

// readAll reads everything from off to the end, as a follower does.
func readAll(b *outputBuffer, off int64) ([]byte, error) {
	var all []byte
	for {
		d, err := b.read("stdout", off)
		if err != nil {
			return nil, err
		}
		if d == nil {
			return all, nil
		}
		if len(d) > maxEventData {
			return nil, errors.New("read returned more than maxEventData")
		}
		all = append(all, d...)
		off += int64(len(d))
	}
}
