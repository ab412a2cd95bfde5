package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// fakeControl is a control server speaking gVisor's urpc framing for one
// method: it writes data to the descriptor it receives and answers with
// reply.
type fakeControl struct {
	data  []byte
	reply string        // JSON answer; empty: hang up without one
	hold  chan struct{} // when set, answers nothing until it is closed
	got   chan map[string]any
}

func (f *fakeControl) serve(t *testing.T, l *net.UnixListener) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf, oob := make([]byte, 4096), make([]byte, 128)
			n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			var req map[string]any
			if err := json.NewDecoder(io.MultiReader(bytes.NewReader(buf[:n]), c)).Decode(&req); err != nil {
				t.Errorf("control server: bad request: %v", err)
				return
			}
			f.got <- req
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				fds, _ := unix.ParseUnixRights(&m)
				for _, fd := range fds {
					out := os.NewFile(uintptr(fd), "payload")
					out.Write(f.data)
					out.Close()
				}
			}
			if f.hold != nil {
				<-f.hold
			}
			if f.reply != "" {
				c.Write([]byte(f.reply))
			}
		}()
	}
}

// withControl makes a runtime knowing container id, whose state file names
// a fake control server.
func withControl(t *testing.T, id string, f *fakeControl) *Runtime {
	t.Helper()
	r, _ := newFake(t)
	sock := filepath.Join(t.TempDir(), "control.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go f.serve(t, l)
	state := `{"sandbox":{"pid":42,"controlSocketPath":"` + sock + `"}}`
	if err := os.WriteFile(filepath.Join(r.cfg.RootDir, id+"_sandbox:"+id+".state"), []byte(state), 0o600); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestTarRootfsUpperTo(t *testing.T) {
	tests := []struct {
		name      string
		reply     string
		wantClass error // nil: success
		wantText  string
	}{
		{"success", `{"success":true,"err":"","result":{}}`, nil, ""},
		{"not an overlay", `{"success":false,"err":"rootfs is not an overlayfs","result":null}`, errdefs.ErrFailedPrecondition, "not an overlayfs"},
		{"sentry error", `{"success":false,"err":"failed to serialize rootfs upper layer to tar: boom"}`, errdefs.ErrInternal, "boom"},
		{"hang up", "", errdefs.ErrInternal, "control call"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeControl{data: []byte("tar bytes"), reply: tc.reply, got: make(chan map[string]any, 1)}
			r := withControl(t, "sb-1", f)
			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer pr.Close()
			err = r.TarRootfsUpperTo(context.Background(), "sb-1", pw)
			pw.Close()
			req := <-f.got
			if req["method"] != "Fs.TarRootfsUpperLayer" {
				t.Errorf("got method %v, want Fs.TarRootfsUpperLayer", req["method"])
			}
			if arg, _ := req["arg"].(map[string]any); arg["ContainerID"] != "sb-1" {
				t.Errorf("got arg %v, want ContainerID sb-1", req["arg"])
			}
			data, _ := io.ReadAll(pr)
			if string(data) != "tar bytes" {
				t.Errorf("got %q through the descriptor, want %q", data, "tar bytes")
			}
			if tc.wantClass == nil {
				if err != nil {
					t.Fatalf("got error %v, want none", err)
				}
				return
			}
			if err == nil || !errors.Is(errdefs.Class(err), tc.wantClass) || !strings.Contains(err.Error(), tc.wantText) {
				t.Fatalf("got error %v (class %v), want class %v mentioning %q", err, errdefs.Class(err), tc.wantClass, tc.wantText)
			}
		})
	}
}

func TestTarRootfsUpperToErrors(t *testing.T) {
	t.Run("unknown container", func(t *testing.T) {
		r, _ := newFake(t)
		err := r.TarRootfsUpperTo(context.Background(), "sb-nope", os.Stdout)
		if !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("got %v, want ErrNotFound", err)
		}
	})
	t.Run("no control socket", func(t *testing.T) {
		r, _ := newFake(t, "sb-2") // an empty state file
		if err := os.WriteFile(filepath.Join(r.cfg.RootDir, "sb-2_sandbox:sb-2.state"), []byte(`{"sandbox":{}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		err := r.TarRootfsUpperTo(context.Background(), "sb-2", os.Stdout)
		if !errors.Is(err, errdefs.ErrUnavailable) {
			t.Fatalf("got %v, want ErrUnavailable", err)
		}
	})
	t.Run("cancelled while the sentry works", func(t *testing.T) {
		f := &fakeControl{got: make(chan map[string]any, 1), hold: make(chan struct{})}
		defer close(f.hold)
		r := withControl(t, "sb-3", f)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, pw, _ := os.Pipe()
		defer pw.Close()
		err := r.TarRootfsUpperTo(ctx, "sb-3", pw)
		if !errors.Is(err, errdefs.ErrDeadlineExceeded) {
			t.Fatalf("got %v, want ErrDeadlineExceeded", err)
		}
	})
}

// The control socket's path is read once and kept; when the sandbox's
// control server moves (a new sandbox under the same id), a call reaches
// the new one, and one to an id whose state is gone is ErrNotFound.
func TestControlSocketKeptAndReread(t *testing.T) {
	ok := `{"success":true,"err":"","result":{}}`
	f1 := &fakeControl{reply: ok, got: make(chan map[string]any, 4)}
	r := withControl(t, "sb-1", f1)
	state := filepath.Join(r.cfg.RootDir, "sb-1_sandbox:sb-1.state")
	call := func() error {
		_, pw, _ := os.Pipe()
		defer pw.Close()
		return r.TarRootfsUpperTo(context.Background(), "sb-1", pw)
	}
	if err := call(); err != nil {
		t.Fatal(err)
	}
	<-f1.got
	// The state file going away does not matter while the server answers.
	if err := os.Rename(state, state+".away"); err != nil {
		t.Fatal(err)
	}
	if err := call(); err != nil {
		t.Fatalf("second call with the path kept: %v", err)
	}
	<-f1.got
	os.Rename(state+".away", state)

	// A new server at a new path, the old one gone.
	f2 := &fakeControl{reply: ok, got: make(chan map[string]any, 4)}
	r2 := withControl(t, "sb-1", f2)
	b, err := os.ReadFile(filepath.Join(r2.cfg.RootDir, "sb-1_sandbox:sb-1.state"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Sandbox struct {
			ControlSocketPath string `json:"controlSocketPath"`
		} `json:"sandbox"`
	}
	json.Unmarshal(b, &st)
	old, _ := r.sockets.Load("sb-1")
	if err := os.Remove(old.(string)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(state, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := call(); err != nil {
		t.Fatalf("call after the server moved: %v", err)
	}
	select {
	case <-f2.got:
	default:
		t.Fatal("the new control server got no call")
	}
	if now, _ := r.sockets.Load("sb-1"); now != st.Sandbox.ControlSocketPath {
		t.Errorf("kept path %v, want the new %s", now, st.Sandbox.ControlSocketPath)
	}

	// Gone for good: the next call reads the state again and finds none.
	os.Remove(st.Sandbox.ControlSocketPath)
	os.Remove(state)
	if err := call(); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("call for a sandbox gone: %v, want ErrNotFound", err)
	}
}
