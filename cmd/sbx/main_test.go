package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "github.com/sandboxd/sandboxd/api/gen/sandboxd/v1"
	sandboxd "github.com/sandboxd/sandboxd/sdk/go"
)

var testNow = time.Date(2025, 1, 10, 12, 0, 0, 0, time.UTC)

func TestExitCode(t *testing.T) {
	sdkErr := &sandboxd.Error{Class: sandboxd.ErrNotFound, Message: "sandbox sb-1 not found"}
	tests := []struct {
		name     string
		err      error
		wantCode int
		wantMsg  string
	}{
		{name: "nil", err: nil, wantCode: 0, wantMsg: ""},
		{name: "sdk error", err: fmt.Errorf("inspect sb-1: %w", sdkErr), wantCode: 1, wantMsg: "inspect sb-1: sandbox sb-1 not found"},
		{name: "multi-line", err: errors.New("a\nb\r\nc"), wantCode: 1, wantMsg: "a b c"},
		{name: "exec failure", err: withCode(exitExecFailed, sdkErr), wantCode: 125, wantMsg: "sandbox sb-1 not found"},
		{name: "process code", err: &exitError{code: 3}, wantCode: 3, wantMsg: ""},
		{name: "timed out", err: statusError(sandboxd.ExitStatus{Code: 137, TimedOut: true}), wantCode: 124},
		{name: "wrapped exit error keeps its code", err: withCode(1, &exitError{code: 7}), wantCode: 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, msg := exitCode(tt.err)
			if code != tt.wantCode || msg != tt.wantMsg {
				t.Errorf("exitCode(%v) = %d, %q, want %d, %q", tt.err, code, msg, tt.wantCode, tt.wantMsg)
			}
		})
	}
	if !errors.Is(withCode(exitExecFailed, sdkErr), sandboxd.ErrNotFound) {
		t.Error("withCode hides the SDK's error class, want errors.Is to see it")
	}
}

// sbx runs sbx in-process and returns its exit code, stdout and stderr.
func sbx(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// checkOneLine fails unless stderr is one "sbx: " line containing want.
func checkOneLine(t *testing.T, stderr, want string) {
	t.Helper()
	if !strings.HasPrefix(stderr, "sbx: ") || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, want) {
		t.Errorf("stderr = %q, want one line \"sbx: ...%s...\"", stderr, want)
	}
}

func TestRunWithoutDaemon(t *testing.T) {
	t.Setenv("SANDBOXD_ADDR", "127.0.0.1:1") // nothing listens on port 1
	t.Setenv("SANDBOXD_TOKEN", "x")
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{name: "ls unreachable", args: []string{"ls"}, wantCode: 1, wantErr: "is sandboxd running"},
		{name: "exec unreachable", args: []string{"exec", "sb-1", "--", "true"}, wantCode: 125, wantErr: "exec"},
		{name: "exec bad flag", args: []string{"exec", "--nope", "sb-1", "--", "true"}, wantCode: 125, wantErr: "unknown flag"},
		{name: "exec bad timeout", args: []string{"exec", "--timeout", "soon", "sb-1", "--", "true"}, wantCode: 125, wantErr: "not a duration"},
		{name: "exec bad env", args: []string{"exec", "--env", "A", "sb-1", "--", "true"}, wantCode: 125, wantErr: "missing '='"},
		{name: "exec no command", args: []string{"exec", "sb-1", "--"}, wantCode: 125, wantErr: "no command"},
		{name: "create bad env", args: []string{"create", "--env", "NOEQUALS"}, wantCode: 1, wantErr: `"NOEQUALS" is not KEY=VALUE`},
		{name: "create bad tag", args: []string{"create", "--tag", "=v"}, wantCode: 1, wantErr: "empty key"},
		{name: "create bad memory", args: []string{"create", "--memory", "1.5"}, wantCode: 1, wantErr: "--memory"},
		{name: "create arg before dash", args: []string{"create", "sleep", "--", "1"}, wantCode: 1, wantErr: "after --"},
		{name: "wait unreachable", args: []string{"wait", "sb-1"}, wantCode: 1, wantErr: "wait sb-1"},
		{name: "inspect no args", args: []string{"inspect"}, wantCode: 1, wantErr: "usage: sbx inspect"},
		{name: "tag bad pair", args: []string{"tag", "sb-1", "x"}, wantCode: 1, wantErr: "missing '='"},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 1, wantErr: "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := sbx(t, "", tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", code, tt.wantCode, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
			checkOneLine(t, stderr, tt.wantErr)
		})
	}
}

func TestSecretCreateNeverPrintsValues(t *testing.T) {
	f := &fakeDaemon{}
	startFakeDaemon(t, f)
	code, stdout, stderr := sbx(t, "", "secret", "create", "db", "PASSWORD=hunter2", "hunter3")
	if code != 1 || strings.Contains(stdout+stderr, "hunter") {
		t.Errorf("got code %d, stdout %q, stderr %q; want 1 and no value printed", code, stdout, stderr)
	}
	code, stdout, stderr = sbx(t, "", "secret", "create", "db", "PASSWORD=hunter2", "USER=me")
	if code != 0 || stdout != "" || stderr != "" {
		t.Fatalf("got code %d, stdout %q, stderr %q; want 0 and no output", code, stdout, stderr)
	}
	if got := f.secrets["db"]; got["PASSWORD"] != "hunter2" || got["USER"] != "me" {
		t.Errorf("daemon got secret %v, want PASSWORD and USER", got)
	}
}

func TestCreate(t *testing.T) {
	f := &fakeDaemon{}
	startFakeDaemon(t, f)
	code, stdout, stderr := sbx(t, "", "create", "--app", "web", "--name", "api", "--image", "debian",
		"--env", "A=1", "--env", "B=x=y", "--secret", "db", "--secret", "api", "--workdir", "/srv",
		"--timeout", "90", "--cpu", "1.5", "--memory", "512", "--tag", "team=a", "--", "sh", "-c", "sleep 5")
	if code != 0 || stdout != "sb-new\n" || stderr != "" {
		t.Fatalf("got code %d, stdout %q, stderr %q; want 0, \"sb-new\\n\", nothing", code, stdout, stderr)
	}
	r := f.created
	if r.App != "web" || r.Name != "api" || r.Image != "debian" || r.Workdir != "/srv" {
		t.Errorf("got app %q name %q image %q workdir %q, want web api debian /srv", r.App, r.Name, r.Image, r.Workdir)
	}
	if r.Env["A"] != "1" || r.Env["B"] != "x=y" || r.Tags["team"] != "a" {
		t.Errorf("got env %v tags %v, want A=1 B=x=y and team=a", r.Env, r.Tags)
	}
	if fmt.Sprint(r.Secrets) != "[db api]" || fmt.Sprint(r.Entrypoint) != "[sh -c sleep 5]" {
		t.Errorf("got secrets %q entrypoint %q, want [db api] and [sh -c sleep 5]", r.Secrets, r.Entrypoint)
	}
	if r.TimeoutMs != 90_000 || r.Resources.Cpu != 1.5 || r.Resources.MemoryMib != 512 {
		t.Errorf("got timeout %dms cpu %v memory %d, want 90000 1.5 512", r.TimeoutMs, r.Resources.Cpu, r.Resources.MemoryMib)
	}
}

func TestExec(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		exited     *pb.Exited
		wantCode   int
		wantStderr string
	}{
		{name: "exit code", args: []string{"exec", "sb-run", "--", "false"}, exited: &pb.Exited{ExitCode: 3}, wantCode: 3, wantStderr: "err\n"},
		{name: "success", args: []string{"exec", "--workdir", "/tmp", "--env", "K=V", "--timeout", "5s", "sb-run", "--", "ls"}, exited: &pb.Exited{}, wantCode: 0, wantStderr: "err\n"},
		{name: "by name", args: []string{"exec", "web/api", "--", "ls"}, exited: &pb.Exited{}, wantCode: 0, wantStderr: "err\n"},
		{name: "timeout", args: []string{"exec", "sb-run", "--", "sleep", "9"}, exited: &pb.Exited{ExitCode: 137, TimedOut: true}, wantCode: 124, wantStderr: "err\n"},
		{name: "no such sandbox", args: []string{"exec", "sb-gone", "--", "ls"}, wantCode: 125},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeDaemon{sandboxes: map[string]*pb.Sandbox{"sb-run": runningSandbox()},
				stdout: "out\n", stderr: "err\n", exited: tt.exited}
			startFakeDaemon(t, f)
			code, stdout, stderr := sbx(t, "", tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", code, tt.wantCode, stderr)
			}
			if tt.wantCode == 125 {
				checkOneLine(t, stderr, "not found")
				return
			}
			if stdout != "out\n" || stderr != tt.wantStderr {
				t.Errorf("stdout %q, stderr %q, want %q, %q", stdout, stderr, "out\n", tt.wantStderr)
			}
		})
	}
	t.Run("options reach the daemon", func(t *testing.T) {
		f := &fakeDaemon{sandboxes: map[string]*pb.Sandbox{"sb-run": runningSandbox()}, exited: &pb.Exited{}}
		startFakeDaemon(t, f)
		sbx(t, "", "exec", "--workdir", "/tmp", "--env", "K=V", "--timeout", "2m", "-i", "sb-run", "--", "cat", "-n")
		r := f.execReq
		if r.Workdir != "/tmp" || r.Env["K"] != "V" || r.TimeoutMs != 120_000 || !r.Stdin || fmt.Sprint(r.Argv) != "[cat -n]" {
			t.Errorf("daemon got %v, want workdir /tmp, env K=V, 120000ms, stdin, argv [cat -n]", r)
		}
	})
}

func TestInspect(t *testing.T) {
	f := &fakeDaemon{sandboxes: map[string]*pb.Sandbox{"sb-run": runningSandbox(), "sb-done": finishedSandbox()}}
	startFakeDaemon(t, f)

	code, stdout, stderr := sbx(t, "", "inspect", "web/api")
	if code != 0 {
		t.Fatalf("exit code %d, stderr %q, want 0", code, stderr)
	}
	for _, want := range []string{"id:            sb-run\n", "state:         running\n", "exit code:     -\n",
		"cpu:           0.5\n", "memory:        256 MiB\n", "env:           MODE\n", "secrets:       db\n",
		"tags:          team=a\n", `entrypoint:    sh -c "sleep 1000"` + "\n"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "dev") {
		t.Errorf("inspect output shows env values, want keys only:\n%s", stdout)
	}

	code, stdout, _ = sbx(t, "", "inspect", "--json", "sb-done")
	var v map[string]any
	if err := json.Unmarshal([]byte(stdout), &v); err != nil || code != 0 {
		t.Fatalf("inspect --json: code %d, %v in %q", code, err, stdout)
	}
	for key, want := range map[string]any{"id": "sb-done", "state": "finished", "exit_code": 3.0, "finish_reason": "exited", "started_at": nil} {
		if v[key] != want {
			t.Errorf("json %q = %v, want %v", key, v[key], want)
		}
	}

	code, _, stderr = sbx(t, "", "inspect", "sb-nope")
	if code != 1 {
		t.Errorf("inspect of a missing sandbox: exit code %d, want 1", code)
	}
	checkOneLine(t, stderr, "sb-nope")
}

func TestLsWaitPollTag(t *testing.T) {
	f := &fakeDaemon{sandboxes: map[string]*pb.Sandbox{"sb-run": runningSandbox(), "sb-done": finishedSandbox()}}
	startFakeDaemon(t, f)

	_, stdout, _ := sbx(t, "", "ls", "--all")
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "ID APP NAME IMAGE STATE AGE TAGS" {
		t.Errorf("ls output:\n%s\nwant a header and two rows", stdout)
	}
	_, stdout, _ = sbx(t, "", "ls", "--json")
	var views []sandboxView
	if err := json.Unmarshal([]byte(stdout), &views); err != nil || len(views) != 2 {
		t.Errorf("ls --json: %v, %d views, want 2", err, len(views))
	}

	for _, tt := range []struct {
		args     []string
		wantCode int
		wantOut  string
	}{
		{[]string{"poll", "sb-run"}, 0, "running\n"},
		{[]string{"poll", "sb-done"}, 0, "3\n"},
		{[]string{"wait", "sb-done"}, 3, ""},
		{[]string{"tag", "sb-run", "a=1", "b=2"}, 0, ""},
	} {
		code, stdout, stderr := sbx(t, "", tt.args...)
		if code != tt.wantCode || stdout != tt.wantOut || stderr != "" {
			t.Errorf("sbx %q: code %d, stdout %q, stderr %q; want %d, %q, nothing", tt.args, code, stdout, stderr, tt.wantCode, tt.wantOut)
		}
	}
	if fmt.Sprint(f.tags) != "map[a:1 b:2]" {
		t.Errorf("daemon got tags %v, want map[a:1 b:2]", f.tags)
	}
}

func TestLogsTerminateSecrets(t *testing.T) {
	f := &fakeDaemon{sandboxes: map[string]*pb.Sandbox{"sb-run": runningSandbox()}, stdout: "out\n", stderr: "err\n",
		secrets: map[string]map[string]string{"db": {"PASSWORD": "hunter2"}}}
	startFakeDaemon(t, f)
	tests := []struct {
		args                []string
		wantCode            int
		wantStdout, wantErr string
	}{
		{args: []string{"logs", "sb-run"}, wantStdout: "out\n", wantErr: "err\n"},
		{args: []string{"logs", "-f", "web/api"}, wantStdout: "out\n", wantErr: "err\n"},
		{args: []string{"secret", "ls"}, wantStdout: "NAME   KEYS\ndb     PASSWORD\n"},
		{args: []string{"secret", "rm", "db"}},
		{args: []string{"secret", "rm", "db"}, wantCode: 1, wantErr: "sbx: secret rm db: sandbox db not found\n"},
		{args: []string{"terminate", "sb-run"}},
		{args: []string{"poll", "sb-run"}, wantStdout: "137\n"},
		{args: []string{"terminate", "sb-nope"}, wantCode: 1, wantErr: "sbx: terminate sb-nope: sandbox sb-nope not found\n"},
		{args: []string{"version"}, wantStdout: "sbx dev\n"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := sbx(t, "", tt.args...)
			if code != tt.wantCode || stdout != tt.wantStdout || stderr != tt.wantErr {
				t.Errorf("got code %d, stdout %q, stderr %q; want %d, %q, %q", code, stdout, stderr, tt.wantCode, tt.wantStdout, tt.wantErr)
			}
		})
	}
}
