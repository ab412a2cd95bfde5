package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// TarRootfsUpper writes the upper layer of the container's root overlay (the
// changes made in the sandbox since it started) as a tar to file, which is
// created or truncated (runsc tar rootfs-upper). The sandbox keeps running;
// the tar is a point-in-time copy taken by the sentry.
//
// The tar is in overlayfs form, not OCI form: a deleted file is a character
// device 0/0 and a directory that hides the lower one carries the xattr
// trusted.overlay.opaque=y (image.ConvertUpperTar turns it into a layer).
// Names start with "./"; the first entry is the root itself. Mounts other than
// the root (bind mounts, the /tmp tmpfs gVisor adds when the image's /tmp is
// empty) are not part of it.
//
// Errors: ErrNotFound for an unknown id, ErrInvalidArgument for a relative
// file.
func (r *Runtime) TarRootfsUpper(ctx context.Context, id, file string) error {
	if err := r.mustExist(id); err != nil {
		return fmt.Errorf("tar rootfs-upper: %w", err)
	}
	if !filepath.IsAbs(file) {
		return errdefs.Invalid("tar rootfs-upper %s: file %q must be absolute", id, file)
	}
	args := append(r.globalArgs(id), "tar", "rootfs-upper", "--file", file, id)
	_, err := r.cmd.run(ctx, invocation{args: args})
	return classify(err, "tar rootfs-upper "+id)
}

// TarRootfsUpperTo writes the tar TarRootfsUpper writes (same form) to w (a
// file or a pipe), so that the caller can read it while the sentry writes
// it. It asks the sandbox's control server directly, as `runsc tar
// rootfs-upper` does, without starting runsc (a runsc start costs about 30
// ms here). The sentry gets its own copy of w, which it writes at w's
// offset and has closed when this returns; the caller still owns w. The
// sentry holds its filesystem's lock while it writes. Into a pipe whose
// reader closed its end, the sentry stops with an error (EPIPE); into a
// file it cannot be stopped. A cancelled ctx makes this return at once, but
// the sentry writes on.
//
// Errors: ErrNotFound for an unknown id, ErrUnavailable when the control
// server cannot be reached, the sentry's error text otherwise.
func (r *Runtime) TarRootfsUpperTo(ctx context.Context, id string, w *os.File) error {
	// No mustExist (a read of the whole root directory): the state file
	// read next is missing for an unknown id.
	if err := ValidateID(id); err != nil {
		return fmt.Errorf("tar rootfs-upper: %w", err)
	}
	arg := struct {
		ContainerID string `json:"ContainerID"`
	}{id}
	return r.control(ctx, id, "tar rootfs-upper", "Fs.TarRootfsUpperLayer", arg, w)
}

// control makes a control call (see controlCall) to sandbox id's control
// server. The server's socket path is read from runsc's state file once
// and kept (reading and decoding it cost 0.1-0.2 ms, a tenth of a small
// snapshot); a kept path that no longer answers is read again.
func (r *Runtime) control(ctx context.Context, id, what, method string, arg any, files ...*os.File) error {
	sock, kept := r.sockets.Load(id)
	if !kept {
		p, err := r.controlSocket(id)
		if err != nil {
			return fmt.Errorf("%s %s: %w", what, id, err)
		}
		sock = p
	}
	err := controlCall(ctx, sock.(string), method, arg, files...)
	if kept && errors.Is(err, errdefs.ErrUnavailable) {
		// Nothing was sent: ask the state file again.
		r.sockets.Delete(id)
		return r.control(ctx, id, what, method, arg, files...)
	}
	if !kept && !errors.Is(err, errdefs.ErrUnavailable) {
		r.sockets.Store(id, sock) // it answered
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, id, err)
	}
	return nil
}

// controlSocket returns the path of the control server socket of sandbox
// id, as runsc recorded it in its state file.
func (r *Runtime) controlSocket(id string) (string, error) {
	// runsc names the file "<container id>_sandbox:<sandbox id>.state".
	b, err := os.ReadFile(filepath.Join(r.cfg.RootDir, id+"_sandbox:"+id+".state"))
	if errors.Is(err, os.ErrNotExist) {
		return "", errdefs.NotFound("container %s", id)
	}
	if err != nil {
		return "", err
	}
	var st struct {
		Sandbox struct {
			ControlSocketPath string `json:"controlSocketPath"`
		} `json:"sandbox"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return "", fmt.Errorf("parse state file: %w", err)
	}
	if st.Sandbox.ControlSocketPath == "" {
		return "", errdefs.Unavailable("no control socket recorded for %s", id)
	}
	return st.Sandbox.ControlSocketPath, nil
}

// controlCall makes one call of gVisor's control protocol (urpc) on the
// stream socket at sock: a JSON object {"method", "arg"} whose first bytes
// carry the files as SCM_RIGHTS, answered by a JSON object {"success",
// "err", "result"}. The result is not needed here and is discarded.
func controlCall(ctx context.Context, sock, method string, arg any, files ...*os.File) error {
	req, err := json.Marshal(struct {
		Method string `json:"method"`
		Arg    any    `json:"arg"`
	}{method, arg})
	if err != nil {
		return err
	}
	if len(sock) >= len(unix.RawSockaddrUnix{}.Path) {
		// Too long for a socket address: name it through a descriptor, as
		// runsc does.
		fd, err := unix.Open(sock, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return errdefs.Unavailable("control socket %s: %v", sock, err)
		}
		defer unix.Close(fd)
		sock = "/proc/self/fd/" + strconv.Itoa(fd)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return errdefs.Unavailable("control socket: %v", err)
	}
	conn := c.(*net.UnixConn)
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	if _, _, err := conn.WriteMsgUnix(req, unix.UnixRights(fds...), nil); err != nil {
		return ctxOr(ctx, fmt.Errorf("control call %s: %w", method, err))
	}
	var res struct {
		Success bool   `json:"success"`
		Err     string `json:"err"`
	}
	if err := json.NewDecoder(conn).Decode(&res); err != nil {
		return ctxOr(ctx, fmt.Errorf("control call %s: %w", method, err))
	}
	if !res.Success {
		return remoteError(res.Err)
	}
	return nil
}

// ctxOr returns ctx's error, classed, when ctx is done, else err.
func ctxOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return classify(ctx.Err(), "control call")
	}
	return err
}

// remoteError classes the sentry's error text as runsc's is classed.
func remoteError(text string) error {
	d := strings.ToLower(text)
	for _, m := range textClasses {
		if strings.Contains(d, m.text) {
			return fmt.Errorf("%w: %s", m.class, text)
		}
	}
	if strings.Contains(d, "not an overlayfs") {
		return errdefs.FailedPrecondition("%s", text)
	}
	return errors.New(text)
}
