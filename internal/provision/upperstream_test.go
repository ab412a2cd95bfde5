package provision

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeStreamer writes data in pieces of piece bytes, pausing between them
// (a sentry slower than the reader), then returns err. It counts calls.
type fakeStreamer struct {
	data  []byte
	piece int
	pause time.Duration
	err   error
	calls atomic.Int32
	ended atomic.Bool
}

func (f *fakeStreamer) TarRootfsUpperTo(ctx context.Context, id string, w *os.File) error {
	f.calls.Add(1)
	defer f.ended.Store(true)
	// The sentry writes through its own copy of the descriptor (passed
	// over a socket: the same open file, at its offset).
	fd, err := unix.FcntlInt(w.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return err
	}
	dup := os.NewFile(uintptr(fd), "sentry's copy")
	defer dup.Close()
	for rest := f.data; len(rest) > 0; {
		n := min(len(rest), max(f.piece, 1))
		if _, err := dup.Write(rest[:n]); err != nil {
			return err
		}
		rest = rest[n:]
		time.Sleep(f.pause)
	}
	return f.err
}

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

func TestUpperStream(t *testing.T) {
	tests := []struct {
		name    string
		size    int
		piece   int
		pause   time.Duration
		err     error
		wantErr bool
	}{
		{"empty", 0, 0, 0, nil, false},
		{"small", 1000, 1000, 0, nil, false},
		{"written whole before it is read", 3*punchEvery + 17, 3*punchEvery + 17, 0, nil, false},
		{"read while written", 3*punchEvery + 5, 300 << 10, time.Millisecond, nil, false},
		{"engine fails after writing", 1<<20 + 3, 64 << 10, 0, errors.New("sentry: disk on fire"), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeStreamer{data: payload(tc.size), piece: tc.piece, pause: tc.pause, err: tc.err}
			u, err := streamUpper(context.Background(), f, "sb-x", t.TempDir(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			got, err := io.ReadAll(u)
			if tc.wantErr {
				if err == nil || !errors.Is(err, tc.err) {
					t.Fatalf("got error %v, want %v (never a clean end)", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if !bytes.Equal(got, f.data) {
				t.Fatalf("got %d bytes, want the %d written", len(got), len(f.data))
			}
		})
	}
}

func TestUpperStreamCloseWaitsForTheEngine(t *testing.T) {
	f := &fakeStreamer{data: payload(1 << 20), piece: 64 << 10, pause: 5 * time.Millisecond}
	dir := t.TempDir()
	u, err := streamUpper(context.Background(), f, "sb-x", dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(u, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	must(t, u.Close())
	if !f.ended.Load() {
		t.Fatal("Close returned while the engine call was still writing")
	}
	must(t, u.Close()) // idempotent
	if _, err := u.Read(make([]byte, 10)); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Read after Close: got %v, want os.ErrClosed", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("got %d files left in the sandbox directory, want none (the spool is unlinked)", len(ents))
	}
}

func TestUpperStreamSeekStartsAgain(t *testing.T) {
	f := &fakeStreamer{data: payload(2*punchEvery + 1), piece: 1 << 20}
	u, err := streamUpper(context.Background(), f, "sb-x", t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := io.ReadFull(u, make([]byte, punchEvery+12345)); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(u)
	if err != nil || !bytes.Equal(got, f.data) {
		t.Fatalf("after Seek: got %d bytes, %v; want all %d again", len(got), err, len(f.data))
	}
	if n := f.calls.Load(); n != 2 {
		t.Fatalf("got %d engine calls, want 2", n)
	}
	if _, err := u.Seek(10, io.SeekStart); err == nil {
		t.Fatal("Seek(10): got no error, want one")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestUpperStreamCopyRange reads the tar as the extraction does: pieces
// read, pieces copied by the kernel into a file, while the engine writes.
func TestUpperStreamCopyRange(t *testing.T) {
	tests := []struct {
		name    string
		pause   time.Duration
		err     error
		wantErr bool
	}{
		{"read while written", time.Millisecond, nil, false},
		{"written whole first", 0, nil, false},
		{"engine fails", 0, errors.New("sentry: disk on fire"), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeStreamer{data: payload(3*punchEvery + 5), piece: 300 << 10, pause: tc.pause, err: tc.err}
			u, err := streamUpper(context.Background(), f, "sb-x", t.TempDir(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			out, err := os.Create(t.TempDir() + "/out")
			if err != nil {
				t.Fatal(err)
			}
			defer out.Close()
			var got []byte
			for i := 0; len(got) < len(f.data); i++ {
				n := min(len(f.data)-len(got), 1000+i*(1<<20))
				if i%2 == 0 {
					b := make([]byte, n)
					_, err = io.ReadFull(u, b)
					got = append(got, b...)
				} else {
					var m int64
					m, err = u.CopyRangeTo(int(out.Fd()), int64(n))
					if m != int64(n) && err == nil {
						t.Fatalf("CopyRangeTo(%d): got %d bytes and no error", n, m)
					}
					b := make([]byte, m) // the last m bytes of out
					if _, rerr := out.ReadAt(b, mustSize(t, out)-m); rerr != nil {
						t.Fatal(rerr)
					}
					got = append(got, b...)
				}
				if err != nil {
					break
				}
			}
			if err == nil { // the end: a clean one only if the engine succeeded
				if _, err = u.Read(make([]byte, 1)); err == io.EOF {
					err = nil
				}
			}
			if tc.wantErr {
				if err == nil || !errors.Is(err, tc.err) {
					t.Fatalf("got error %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if !bytes.Equal(got, f.data) {
				t.Fatalf("got %d bytes (read and copied), want the %d written", len(got), len(f.data))
			}
		})
	}
}

func mustSize(t *testing.T, f *os.File) int64 {
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// A mirrored stream: the tar starts at 4096 in the sentry's file and its
// copy, every byte handed out or skipped is in the copy first, skipped
// bytes are not read, and what the sentry writes into its file after the
// copy does not reach it.
func TestUpperStreamMirror(t *testing.T) {
	f := &fakeStreamer{data: payload(3<<20 + 11), piece: 256 << 10, pause: time.Millisecond}
	u, err := streamUpper(context.Background(), f, "sb-x", t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	m, err := os.CreateTemp(t.TempDir(), "mirror-")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	start, err := u.MirrorTo(m)
	if err != nil || start != 4096 {
		t.Fatalf("MirrorTo: %d, %v; want 4096", start, err)
	}
	head := make([]byte, 100)
	if _, err := io.ReadFull(u, head); err != nil {
		t.Fatal(err)
	}
	if n, err := u.Skip(1 << 20); err != nil || n != 1<<20 {
		t.Fatalf("Skip: got %d, %v", n, err)
	}
	skipped := make([]byte, 1<<20)
	if _, err := m.ReadAt(skipped, start+100); err != nil || !bytes.Equal(skipped, f.data[100:100+1<<20]) {
		t.Fatalf("skipped bytes not in the copy once skipped: %v", err)
	}
	rest, err := io.ReadAll(u)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(head, f.data[:100]) || !bytes.Equal(rest, f.data[100+1<<20:]) {
		t.Fatal("read around the skip: not the bytes written")
	}
	got := make([]byte, len(f.data))
	if _, err := m.ReadAt(got, start); err != nil || !bytes.Equal(got, f.data) {
		t.Fatalf("the copy from %d: %v, or not the bytes written", start, err)
	}
	// The sentry writes on into its own file: the copy stays.
	if _, err := u.tailFile.f.WriteAt([]byte("changed"), start); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ReadAt(got[:7], start); err != nil || !bytes.Equal(got[:7], f.data[:7]) {
		t.Fatalf("copy changed by a later write to the sentry's file: %q, %v", got[:7], err)
	}
}
