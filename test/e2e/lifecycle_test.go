package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

func TestCreateExecTerminate(t *testing.T) {
	ctx := ctxT(t)
	sb := create(t, sandboxd.CreateOptions{})
	r := execIn(t, sb, nil, "sh", "-c", "echo out; echo err >&2; exit 3")
	if r.stdout != "out\n" || r.stderr != "err\n" || r.status.Code != 3 {
		t.Errorf("got stdout %q stderr %q code %d, want out/err/3", r.stdout, r.stderr, r.status.Code)
	}
	if r := execIn(t, sb, nil, "stat", "-c", "%a", "/"); r.stdout != "755\n" {
		t.Errorf("got mode %q for /, want 755 (non-root users must reach the root)", r.stdout)
	}
	if code, _ := sb.Poll(ctx); code != nil {
		t.Errorf("poll of a running sandbox: got %d, want nil", *code)
	}
	if err := sb.Terminate(ctx); err != nil {
		t.Fatal(err)
	}
	code, err := sb.Wait(ctx)
	if err != nil || code != 137 {
		t.Errorf("wait after terminate: got %d, %v; want 137", code, err)
	}
	if err := sb.Terminate(ctx); err != nil {
		t.Errorf("terminate of a finished sandbox: got %v, want no-op", err)
	}
	info, _ := sb.Info(ctx)
	if info.State != sandboxd.StateFinished || info.FinishReason != "terminated" {
		t.Errorf("got state %s reason %s, want finished/terminated", info.State, info.FinishReason)
	}
	_, err = sb.Exec(ctx, []string{"true"}, nil)
	wantClass(t, "exec on a finished sandbox", err, sandboxd.ErrFailedPrecondition)
}

func TestDefaultImageIsDebianSlim(t *testing.T) {
	sb, err := shared.client().Create(ctxT(t), sandboxd.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Terminate(context.Background()) })
	r := execIn(t, sb, nil, "cat", "/etc/debian_version")
	if !strings.HasPrefix(r.stdout, "12") {
		t.Errorf("got /etc/debian_version %q, want Debian 12", r.stdout)
	}
	info, _ := sb.Info(ctxT(t))
	if info.Image != "debian-slim" {
		t.Errorf("got image %q, want debian-slim", info.Image)
	}
}

func TestEntrypointExitCodeAndLogs(t *testing.T) {
	ctx := ctxT(t)
	sb := create(t, sandboxd.CreateOptions{Entrypoint: []string{"sh", "-c", "echo starting; echo oops >&2; sleep 1; echo done; exit 7"}})
	// Follow while it runs: Logs returns once the sandbox finished and all is read.
	var out, errb bytes.Buffer
	if err := sb.Logs(ctx, true, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if out.String() != "starting\ndone\n" || errb.String() != "oops\n" {
		t.Errorf("followed logs: got %q / %q", out.String(), errb.String())
	}
	code, err := sb.Wait(ctx)
	if err != nil || code != 7 {
		t.Errorf("wait: got %d, %v; want 7", code, err)
	}
	info, _ := sb.Info(ctx)
	if info.FinishReason != "exited" {
		t.Errorf("got finish reason %q, want exited", info.FinishReason)
	}
	// The logs stay readable after the end.
	out.Reset()
	if err := sb.Logs(ctx, false, &out, nil); err != nil || out.String() != "starting\ndone\n" {
		t.Errorf("logs after the end: got %q, %v", out.String(), err)
	}
}

func TestEntrypointStdin(t *testing.T) {
	ctx := ctxT(t)
	sb := create(t, sandboxd.CreateOptions{Entrypoint: []string{"sh", "-c", "read line; echo got:$line; cat; exit 0"}})
	w := sb.Stdin()
	fmt.Fprintln(w, "hello")
	fmt.Fprintln(w, "rest")
	w.Close()
	code, err := sb.Wait(ctx)
	if err != nil || code != 0 {
		t.Fatalf("wait: %d, %v", code, err)
	}
	var out bytes.Buffer
	sb.Logs(ctx, false, &out, nil)
	if out.String() != "got:hello\nrest\n" {
		t.Errorf("got logs %q, want the stdin echoed", out.String())
	}
}

func TestSandboxTimeout(t *testing.T) {
	ctx := ctxT(t)
	sb := create(t, sandboxd.CreateOptions{Timeout: 2 * time.Second})
	code, err := sb.Wait(ctx)
	if err != nil || code != 124 {
		t.Errorf("wait: got %d, %v; want 124", code, err)
	}
	info, _ := sb.Info(ctx)
	if info.FinishReason != "timeout" {
		t.Errorf("got finish reason %q, want timeout", info.FinishReason)
	}
}

func TestNamesAndLookup(t *testing.T) {
	ctx := ctxT(t)
	c := shared.client()
	app := fmt.Sprintf("names-%d", time.Now().UnixNano())
	sb := create(t, sandboxd.CreateOptions{App: app, Name: "web"})
	_, err := c.Create(ctx, sandboxd.CreateOptions{App: app, Name: "web", Image: "busybox"})
	wantClass(t, "duplicate name", err, sandboxd.ErrAlreadyExists)
	// The same name in another app is fine.
	create(t, sandboxd.CreateOptions{App: app + "-other", Name: "web"})

	found, info, err := c.FromName(ctx, app, "web")
	if err != nil || found.ID != sb.ID || info.Name != "web" {
		t.Fatalf("from name: got %v %+v %v, want %s", found, info, err, sb.ID)
	}
	_, _, err = c.FromName(ctx, app, "nope")
	wantClass(t, "unknown name", err, sandboxd.ErrNotFound)

	// The name is freed when the sandbox ends.
	sb.Terminate(ctx)
	_, _, err = c.FromName(ctx, app, "web")
	wantClass(t, "name of a finished sandbox", err, sandboxd.ErrNotFound)
	again := create(t, sandboxd.CreateOptions{App: app, Name: "web"})
	if again.ID == sb.ID {
		t.Error("got the old id for a new sandbox")
	}
}

func TestListByAppAndTags(t *testing.T) {
	ctx := ctxT(t)
	c := shared.client()
	app := fmt.Sprintf("list-%d", time.Now().UnixNano())
	a := create(t, sandboxd.CreateOptions{App: app, Tags: map[string]string{"team": "a", "env": "dev"}})
	b := create(t, sandboxd.CreateOptions{App: app, Tags: map[string]string{"team": "b"}})
	ids := func(list []sandboxd.Info) string {
		var s []string
		for _, i := range list {
			s = append(s, i.ID)
		}
		return strings.Join(s, ",")
	}
	list, err := c.List(ctx, sandboxd.ListOptions{App: app})
	if err != nil || len(list) != 2 {
		t.Fatalf("list app: got %s, %v; want 2", ids(list), err)
	}
	list, _ = c.List(ctx, sandboxd.ListOptions{App: app, Tags: map[string]string{"team": "a"}})
	if ids(list) != a.ID {
		t.Errorf("list team=a: got %s, want %s", ids(list), a.ID)
	}
	list, _ = c.List(ctx, sandboxd.ListOptions{App: app, Tags: map[string]string{"team": "a", "env": "prod"}})
	if len(list) != 0 {
		t.Errorf("list team=a env=prod: got %s, want none", ids(list))
	}
	// Tags are replaced by SetTags and read back.
	if err := b.SetTags(ctx, map[string]string{"team": "a", "owner": "x"}); err != nil {
		t.Fatal(err)
	}
	tags, _ := b.Tags(ctx)
	if len(tags) != 2 || tags["owner"] != "x" {
		t.Errorf("got tags %v after SetTags", tags)
	}
	list, _ = c.List(ctx, sandboxd.ListOptions{App: app, Tags: map[string]string{"team": "a"}})
	if len(list) != 2 {
		t.Errorf("list team=a after retag: got %s, want both", ids(list))
	}
	// Finished sandboxes only on request.
	a.Terminate(ctx)
	list, _ = c.List(ctx, sandboxd.ListOptions{App: app})
	if ids(list) != b.ID {
		t.Errorf("list running: got %s, want %s", ids(list), b.ID)
	}
	list, _ = c.List(ctx, sandboxd.ListOptions{App: app, All: true})
	if len(list) != 2 {
		t.Errorf("list all: got %s, want both", ids(list))
	}
}

func TestSecrets(t *testing.T) {
	ctx := ctxT(t)
	c := shared.client()
	const value = "s3cr3t-value-e2e"
	if err := c.CreateSecret(ctx, "e2e-db", map[string]string{"DB_PASSWORD": value}); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateSecret(ctx, "e2e-exec", map[string]string{"EXEC_TOKEN": "tok-" + value}); err != nil {
		t.Fatal(err)
	}
	sb := create(t, sandboxd.CreateOptions{Secrets: []string{"e2e-db"}, Env: map[string]string{"PLAIN": "p"}})
	r := execIn(t, sb, &sandboxd.ExecOptions{Secrets: []string{"e2e-exec"}}, "sh", "-c", "echo $DB_PASSWORD $PLAIN $EXEC_TOKEN")
	if r.stdout != value+" p tok-"+value+"\n" {
		t.Errorf("got %q, want the secrets in the environment", r.stdout)
	}
	info, _ := sb.Info(ctx)
	list, _ := c.List(ctx, sandboxd.ListOptions{})
	secrets, _ := c.ListSecrets(ctx)
	shown := fmt.Sprintf("%+v %+v %+v", info, list, secrets)
	if strings.Contains(shown, value) {
		t.Errorf("a secret value shows in info, listing or secret list: %s", shown)
	}
	if strings.Contains(shared.logText(), value) {
		t.Error("a secret value shows in the daemon's log")
	}
	_, err := c.Create(ctx, sandboxd.CreateOptions{Image: "busybox", Secrets: []string{"no-such-secret"}})
	wantClass(t, "unknown secret", err, sandboxd.ErrNotFound)
	if err != nil && strings.Contains(err.Error(), value) {
		t.Errorf("error shows a secret value: %v", err)
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	ctx := ctxT(t)
	c := shared.client()
	before, _ := c.List(ctx, sandboxd.ListOptions{All: true})
	cases := []struct {
		name string
		o    sandboxd.CreateOptions
	}{
		{"bad name", sandboxd.CreateOptions{Image: "busybox", Name: "no spaces allowed"}},
		{"bad app", sandboxd.CreateOptions{Image: "busybox", App: "../x"}},
		{"unknown image", sandboxd.CreateOptions{Image: "no-such-image"}},
		{"relative workdir", sandboxd.CreateOptions{Image: "busybox", Workdir: "tmp"}},
		{"timeout too long", sandboxd.CreateOptions{Image: "busybox", Timeout: 25 * time.Hour}},
		{"memory too small", sandboxd.CreateOptions{Image: "busybox", MemoryMiB: 1}},
		{"bad env name", sandboxd.CreateOptions{Image: "busybox", Env: map[string]string{"A=B": "x"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Create(ctx, tc.o)
			class := sandboxd.ErrInvalidArgument
			if tc.name == "unknown image" {
				class = sandboxd.ErrNotFound
			}
			wantClass(t, tc.name, err, class)
			if err != nil && err.Error() == "" {
				t.Error("empty error message")
			}
		})
	}
	after, _ := c.List(ctx, sandboxd.ListOptions{All: true})
	if len(after) != len(before) {
		t.Errorf("bad creates changed the sandbox list: %d before, %d after", len(before), len(after))
	}
	_, _, err := c.Get(ctx, "sb-0000000000000000")
	wantClass(t, "unknown id", err, sandboxd.ErrNotFound)
	_, _, err = c.Get(ctx, "nonsense")
	wantClass(t, "malformed id", err, sandboxd.ErrInvalidArgument)
	sb := create(t, sandboxd.CreateOptions{})
	_, err = sb.Exec(ctx, []string{"pwd"}, &sandboxd.ExecOptions{Workdir: "relative"})
	wantClass(t, "exec with a relative workdir", err, sandboxd.ErrInvalidArgument)
	_, err = sb.Exec(ctx, nil, nil)
	wantClass(t, "exec without a command", err, sandboxd.ErrInvalidArgument)
}

func TestResourceLimitsApplied(t *testing.T) {
	ctx := ctxT(t)
	sb := create(t, sandboxd.CreateOptions{MemoryMiB: 96, CPU: 0.5, Pids: 256})
	info, _ := sb.Info(ctx)
	if info.MemoryMiB != 96 || info.CPU != 0.5 || info.Pids != 256 {
		t.Errorf("got limits %v/%v/%v", info.MemoryMiB, info.CPU, info.Pids)
	}
	// The host cgroup of the sandbox carries the limits (cgroup v1 or v2).
	mem := readFirst(t, "/sys/fs/cgroup/memory/sandboxd/"+sb.ID+"/memory.limit_in_bytes",
		"/sys/fs/cgroup/sandboxd/"+sb.ID+"/memory.max")
	if strings.TrimSpace(mem) != fmt.Sprint(96<<20) {
		t.Errorf("got memory limit %q, want %d", mem, 96<<20)
	}
	quota := readFirst(t, "/sys/fs/cgroup/cpu/sandboxd/"+sb.ID+"/cpu.cfs_quota_us",
		"/sys/fs/cgroup/cpu,cpuacct/sandboxd/"+sb.ID+"/cpu.cfs_quota_us", "/sys/fs/cgroup/sandboxd/"+sb.ID+"/cpu.max")
	if !strings.HasPrefix(strings.TrimSpace(quota), "50000") {
		t.Errorf("got cpu quota %q, want 50000 (0.5 core)", quota)
	}
	// Going over the memory limit ends the sandbox, not the host.
	big := create(t, sandboxd.CreateOptions{MemoryMiB: 64})
	p, err := big.Exec(ctx, []string{"sh", "-c", "head -c 300000000 /dev/zero | tr '\\0' x > /dev/shm/fill; sleep 5"}, &sandboxd.ExecOptions{DiscardStdout: true, DiscardStderr: true})
	if err == nil {
		p.Wait(ctx)
	}
	code, err := big.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	info, _ = big.Info(ctx)
	if info.State != sandboxd.StateFinished || code == 0 {
		t.Errorf("over the memory limit: got state %s code %d, want it ended", info.State, code)
	}
}

func readFirst(t *testing.T, paths ...string) string {
	for _, p := range paths {
		if b, err := os.ReadFile(filepath.Clean(p)); err == nil {
			return string(b)
		}
	}
	t.Errorf("none of %v exists", paths)
	return ""
}
