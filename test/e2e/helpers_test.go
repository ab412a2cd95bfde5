package e2e

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// create makes a sandbox on the shared daemon (busybox unless o names an
// image) and terminates it when the test ends.
func create(t *testing.T, o sandboxd.CreateOptions) *sandboxd.Sandbox {
	t.Helper()
	return createOn(t, shared, o)
}

func createOn(t *testing.T, d *daemon, o sandboxd.CreateOptions) *sandboxd.Sandbox {
	t.Helper()
	if o.Image == "" {
		o.Image = "busybox"
	}
	sb, err := d.client().Create(ctxT(t), o)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Cleanup(func() { sb.Terminate(context.Background()) })
	return sb
}

type result struct {
	stdout, stderr string
	status         sandboxd.ExitStatus
}

// execIn runs argv in sb and returns its output and exit status.
func execIn(t *testing.T, sb *sandboxd.Sandbox, o *sandboxd.ExecOptions, argv ...string) result {
	t.Helper()
	if o == nil {
		o = &sandboxd.ExecOptions{}
	}
	var out, errb bytes.Buffer
	o.Stdout, o.Stderr = &out, &errb
	p, err := sb.Exec(ctxT(t), argv, o)
	if err != nil {
		t.Fatalf("exec %q: %v", argv, err)
	}
	st, err := p.WaitStatus(ctxT(t))
	if err != nil {
		t.Fatalf("wait %q: %v", argv, err)
	}
	return result{out.String(), errb.String(), st}
}

func wantClass(t *testing.T, what string, err, class error) {
	t.Helper()
	if !errors.Is(err, class) {
		t.Errorf("%s: got error %v, want class %q", what, err, class)
	}
}
