package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

// Large files through the staging dir: streamed writes of 1 MiB and more go through
// a host file of the sandbox's staging dir (the daemon writes it, the agent
// copies it), large reads through the agent's raw read. The semantics are
// those of the small path; nothing is left in the staging dir.

// stagedSize is a write that takes the staging dir (internal/server:
// stagedMin is 1 MiB) in more than one step (stagedStep is 16 MiB).
const stagedSize = 40<<20 + 12345

// stageDirOf is the host staging dir of sb on the shared daemon.
func stageDirOf(sb *sandboxd.Sandbox) string {
	return filepath.Join(shared.dir, "sandboxes", sb.ID, "stage")
}

// wantStageClean fails unless sb's staging dir holds no transfer file.
func wantStageClean(t *testing.T, sb *sandboxd.Sandbox) {
	t.Helper()
	entries, err := os.ReadDir(stageDirOf(sb))
	if err != nil {
		t.Fatalf("staging dir: %v", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".xfer-") {
			t.Errorf("staging dir of %s holds %s after the transfers", sb.ID, e.Name())
		}
	}
}

func randomBytes(seed byte, n int) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

func TestFilesStagedLarge(t *testing.T) {
	sb := create(t, sandboxd.CreateOptions{MemoryMiB: 1024})
	f := sb.Files()
	ctx := ctxT(t)
	// More than 100 MiB of binary data under / (gVisor's overlay), streamed.
	const size = 130<<20 + 777
	h := sha256.New()
	src := io.TeeReader(io.LimitReader(detRand{rand.NewChaCha8([32]byte{7})}, size), h)
	start := time.Now()
	n, err := f.WriteFrom(ctx, "/big/file.bin", src, &sandboxd.WriteOptions{MakeParents: true, Mode: 0o600})
	if err != nil || n != size {
		t.Fatalf("write: %d bytes, %v; want %d", n, err, size)
	}
	t.Logf("wrote %d MiB in %v", size>>20, time.Since(start))
	want := hex.EncodeToString(h.Sum(nil))
	if r := execIn(t, sb, nil, "sha256sum", "/big/file.bin"); !strings.HasPrefix(r.stdout, want) {
		t.Errorf("sha256sum in the sandbox: got %q, want %s", r.stdout, want)
	}
	if fi, err := f.Stat(ctx, "/big/file.bin"); err != nil || fi.Size != size || fi.Mode != 0o600 {
		t.Errorf("stat: got %+v, %v; want %d bytes, mode 0600", fi, err, size)
	}
	start = time.Now()
	r, err := f.Open(ctx, "/big/file.bin")
	if err != nil {
		t.Fatal(err)
	}
	if r.Info().Size != size {
		t.Errorf("open: info says %d bytes, want %d", r.Info().Size, size)
	}
	h2 := sha256.New()
	n, err = io.Copy(h2, r)
	r.Close()
	if err != nil || n != size {
		t.Fatalf("read: %d bytes, %v; want %d", n, err, size)
	}
	t.Logf("read %d MiB in %v", size>>20, time.Since(start))
	if got := hex.EncodeToString(h2.Sum(nil)); got != want {
		t.Errorf("read back sha256 %s, want %s", got, want)
	}

	t.Run("append and range", func(t *testing.T) {
		a := randomBytes(1, stagedSize)
		b := randomBytes(2, stagedSize)
		if err := f.WriteFile(ctx, "/big/ab", a, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteFrom(ctx, "/big/ab", bytes.NewReader(b), &sandboxd.WriteOptions{Append: true}); err != nil {
			t.Fatal(err)
		}
		got, err := f.ReadFile(ctx, "/big/ab")
		if err != nil || !bytes.Equal(got, append(a, b...)) {
			t.Fatalf("after write and append: read %d bytes, %v; want the %d written", len(got), err, 2*stagedSize)
		}
		// Truncate: a shorter large write replaces the file whole.
		if err := f.WriteFile(ctx, "/big/ab", b[:5<<20], nil); err != nil {
			t.Fatal(err)
		}
		if got, err := f.ReadFile(ctx, "/big/ab"); err != nil || !bytes.Equal(got, b[:5<<20]) {
			t.Fatalf("after a truncating write: read %d bytes, %v; want %d", len(got), err, 5<<20)
		}
		rr, err := f.OpenRange(ctx, "/big/ab", 3<<20+5, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		got, err = io.ReadAll(rr)
		rr.Close()
		if err != nil || !bytes.Equal(got, b[3<<20+5:4<<20+5]) {
			t.Errorf("range read: got %d bytes, %v; want 1 MiB from 3 MiB+5", len(got), err)
		}
	})
	wantStageClean(t, sb)
}

// putStagedSize is a one-call write (PutFile: the SDK's WriteFile of up to
// 1 MiB) that takes the staging dir (internal/server: putStagedMin is
// 256 KiB).
const putStagedSize = 600<<10 + 321

// The semantics of the staged paths, a stream's and a one-call write's:
// typed errors, exclusive create, modes, size limits, append.
func TestFilesStagedErrors(t *testing.T) {
	sb := create(t, sandboxd.CreateOptions{MemoryMiB: 512})
	for _, size := range []int{stagedSize, putStagedSize} {
		t.Run(fmt.Sprint(size), func(t *testing.T) { stagedErrors(t, sb, size) })
	}
	wantStageClean(t, sb)
}

func stagedErrors(t *testing.T, sb *sandboxd.Sandbox, stagedSize int) {
	f := sb.Files()
	ctx := ctxT(t)
	sh(t, sb, "rm -rf /e && mkdir -p /e/dir && echo x > /e/file")
	data := randomBytes(3, stagedSize)
	limit := int64(stagedSize / 2)
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"exclusive create of an existing file", f.WriteFile(ctx, "/e/file", data, &sandboxd.WriteOptions{Exclusive: true}), sandboxd.ErrAlreadyExists},
		{"write a directory", f.WriteFile(ctx, "/e/dir", data, nil), sandboxd.ErrIsDirectory},
		{"write without parent", f.WriteFile(ctx, "/e/no/such/file", data, nil), sandboxd.ErrNotFound},
		{"write under a file", f.WriteFile(ctx, "/e/file/x", data, nil), sandboxd.ErrNotDirectory},
		{"size limit", f.WriteFile(ctx, "/e/limited", data, &sandboxd.WriteOptions{SizeLimit: limit}), sandboxd.ErrFileTooLarge},
		{"relative path", f.WriteFile(ctx, "e/rel", data, nil), sandboxd.ErrInvalidArgument},
		{"read missing", errOf(f.Open(ctx, "/e/nope")), sandboxd.ErrNotFound},
		{"read a directory", errOf(f.Open(ctx, "/e/dir")), sandboxd.ErrIsDirectory},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !errors.Is(tt.err, tt.want) {
				t.Errorf("got %v, want class %q", tt.err, tt.want)
			}
		})
	}
	// The existing file is untouched, the limited one holds no more than
	// its limit, and an exclusive create of a new file works.
	if got, err := f.ReadFile(ctx, "/e/file"); err != nil || string(got) != "x\n" {
		t.Errorf("/e/file after the refused exclusive write: got %q, %v", got, err)
	}
	if fi, err := f.Stat(ctx, "/e/limited"); err != nil || fi.Size > limit {
		t.Errorf("/e/limited: got %+v, %v; want at most %d bytes", fi, err, limit)
	}
	if err := f.WriteFile(ctx, "/e/new", data, &sandboxd.WriteOptions{Exclusive: true, Mode: 0o640}); err != nil {
		t.Errorf("exclusive create of a new file: %v", err)
	}
	if fi, err := f.Stat(ctx, "/e/new"); err != nil || fi.Size != int64(stagedSize) || fi.Mode != 0o640 {
		t.Errorf("/e/new: got %+v, %v; want %d bytes, mode 0640", fi, err, stagedSize)
	}
	// Append adds to what is there.
	if err := f.WriteFile(ctx, "/e/file", data, &sandboxd.WriteOptions{Append: true}); err != nil {
		t.Fatalf("append: %v", err)
	}
	if got, err := f.ReadFile(ctx, "/e/file"); err != nil || !bytes.Equal(got, append([]byte("x\n"), data...)) {
		t.Errorf("/e/file after an append of %d bytes: got %d bytes, %v; want x and the data", len(data), len(got), err)
	}
}

func TestFilesStagedPathEscape(t *testing.T) {
	sb := create(t, sandboxd.CreateOptions{MemoryMiB: 512})
	f := sb.Files()
	ctx := ctxT(t)
	hostDir := t.TempDir()
	sh(t, sb, "mkdir -p /esc && ln -s /.. /esc/up && ln -s ../../../../.. /esc/rel")
	data := randomBytes(4, stagedSize)
	for _, p := range []string{"/../../.." + hostDir + "/a", "/esc/up" + hostDir + "/b", "/esc/rel" + hostDir + "/c"} {
		if err := f.WriteFile(ctx, p, data, &sandboxd.WriteOptions{MakeParents: true}); err != nil {
			t.Fatalf("write %s: %v", p, err)
		}
	}
	// Everything landed inside the sandbox, nothing on the host.
	if entries, _ := os.ReadDir(hostDir); len(entries) != 0 {
		t.Errorf("a write inside the sandbox reached the host's %s: %d entries", hostDir, len(entries))
	}
	for _, name := range []string{"a", "b", "c"} {
		got, err := f.ReadFile(ctx, hostDir+"/"+name)
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s/%s inside the sandbox: %d bytes, %v; want %d", hostDir, name, len(got), err, len(data))
		}
	}
	// The staging dir as the sandbox sees it is read-only: the file API
	// cannot plant anything there for the daemon.
	err := f.WriteFile(ctx, "/.sandboxd/stage/.xfer-00", data, nil)
	if err == nil {
		t.Errorf("write into the staging dir from inside: got no error")
	}
	if _, err := os.Stat(filepath.Join(stageDirOf(sb), ".xfer-00")); err == nil {
		t.Errorf("a write into the staging dir from inside reached the host")
	}
	wantStageClean(t, sb)
}

// TestFilesStagedSnapshot takes memory snapshots while large writes and
// reads are under way: the snapshot waits for the step in flight, the
// transfers go on, the sandbox survives and the snapshot restores.
func TestFilesStagedSnapshot(t *testing.T) {
	sb := create(t, sandboxd.CreateOptions{MemoryMiB: 1024})
	f := sb.Files()
	ctx := ctxT(t)
	const size = 120 << 20
	data := randomBytes(5, size)
	if err := f.WriteFile(ctx, "/data.bin", data, nil); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	// A slow writer keeps a staged write going for a while.
	werr := make(chan error, 1)
	go func() {
		_, err := f.WriteFrom(ctx, "/written.bin", &slowReader{r: bytes.NewReader(data), chunk: 4 << 20, pause: 30 * time.Millisecond}, nil)
		werr <- err
	}()
	// And a read, read slowly.
	rerr := make(chan error, 1)
	go func() {
		r, err := f.Open(ctx, "/data.bin")
		if err != nil {
			rerr <- err
			return
		}
		defer r.Close()
		got, err := io.ReadAll(&slowReader{r: r, chunk: 4 << 20, pause: 20 * time.Millisecond})
		if err == nil && !bytes.Equal(got, data) {
			err = errorString("read back differs from what was written")
		}
		rerr <- err
	}()
	time.Sleep(300 * time.Millisecond)
	var snaps []sandboxd.Snapshot
	for range 2 {
		snaps = append(snaps, snapshotOf(t, sb, 0))
	}
	t.Logf("%d snapshots taken %v after the transfers began", len(snaps), time.Since(began))
	if err := <-werr; err != nil {
		t.Fatalf("write during snapshots: %v", err)
	}
	if err := <-rerr; err != nil {
		t.Fatalf("read during snapshots: %v", err)
	}
	t.Logf("transfers done %v after they began", time.Since(began))
	got, err := f.ReadFile(ctx, "/written.bin")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("written during snapshots: read %d bytes, %v; want the %d written", len(got), err, size)
	}
	wantStageClean(t, sb)
	// The source lives on; each snapshot restores, into a sandbox whose
	// file API (both paths) works.
	sh(t, sb, "true")
	for _, sn := range snaps {
		dst := restore(t, sn.ID, sandboxd.RestoreOptions{})
		sh(t, dst, "test -s /data.bin")
		small := randomBytes(6, stagedSize)
		if err := dst.Files().WriteFile(ctx, "/after.bin", small, nil); err != nil {
			t.Fatalf("write in the restored sandbox: %v", err)
		}
		if got, err := dst.Files().ReadFile(ctx, "/after.bin"); err != nil || !bytes.Equal(got, small) {
			t.Fatalf("read in the restored sandbox: %d bytes, %v", len(got), err)
		}
		wantStageClean(t, dst)
		dst.Terminate(context.Background())
	}
}

// slowReader reads from r, pausing after every chunk bytes.
type slowReader struct {
	r     io.Reader
	chunk int
	pause time.Duration
	left  int // until the next pause
}

func (s *slowReader) Read(p []byte) (int, error) {
	if s.left <= 0 {
		time.Sleep(s.pause)
		s.left = s.chunk
	}
	if len(p) > s.left {
		p = p[:s.left]
	}
	n, err := s.r.Read(p)
	s.left -= n
	return n, err
}

type errorString string

func (e errorString) Error() string { return string(e) }

// TestFilesStagedDaemonCrash kills the daemon in the middle of a staged
// write: the restarted daemon adopts the sandbox, its staging dir holds no
// transfer file, and large writes work again.
func TestFilesStagedDaemonCrash(t *testing.T) {
	d := ownDaemon(t, uniqueOpts())
	ctx := ctxT(t)
	sb, err := d.client().Create(ctx, sandboxd.CreateOptions{Image: "busybox", MemoryMiB: 512})
	if err != nil {
		t.Fatal(err)
	}
	stage := filepath.Join(d.dir, "sandboxes", sb.ID, "stage")
	// A write that never ends (a reader that keeps giving), and a transfer
	// file as a daemon killed between writing and removing one leaves it.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go sb.Files().WriteFrom(wctx, "/endless", &slowReader{r: detRand{rand.NewChaCha8([32]byte{9})}, chunk: 8 << 20, pause: 50 * time.Millisecond}, nil)
	deadline := time.Now().Add(20 * time.Second)
	for {
		fi, err := sb.Files().Stat(ctx, "/endless")
		if err == nil && fi.Size >= 20<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the staged write did not get going: %+v, %v", fi, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := os.WriteFile(filepath.Join(stage, ".xfer-deadbeef"), []byte("left by a crash"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.kill()
	cancel()
	d.restart(t)
	sb2 := d.client().Sandbox(sb.ID)
	if entries, err := os.ReadDir(stage); err != nil {
		t.Fatal(err)
	} else {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".xfer-") {
				t.Errorf("after the restart the staging dir holds %s", e.Name())
			}
		}
	}
	data := randomBytes(10, stagedSize)
	if err := sb2.Files().WriteFile(ctx, "/after", data, nil); err != nil {
		t.Fatalf("large write after the restart: %v\n%s", err, d.logTail())
	}
	if got, err := sb2.Files().ReadFile(ctx, "/after"); err != nil || !bytes.Equal(got, data) {
		t.Errorf("read back after the restart: %d bytes, %v", len(got), err)
	}
	if err := sb2.Terminate(context.Background()); err != nil {
		t.Error(err)
	}
}
