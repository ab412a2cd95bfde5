package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sbx runs the sbx binary against the shared daemon.
func sbx(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "sbx"), args...)
	cmd.Env = append(os.Environ(), "SANDBOXD_ADDR="+shared.addr, "SANDBOXD_TOKEN="+shared.token)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("sbx %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func sbxCreate(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code := sbx(t, "", append([]string{"create"}, args...)...)
	id := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(id, "sb-") || strings.Count(out, "\n") != 1 {
		t.Fatalf("sbx create: got %q / %q code %d, want the id alone", out, errs, code)
	}
	t.Cleanup(func() { sbx(t, "", "terminate", id) })
	return id
}

func TestCLI(t *testing.T) {
	app := fmt.Sprintf("cli-%d", time.Now().UnixNano())
	id := sbxCreate(t, "--app", app, "--name", "box", "--image", "busybox", "--env", "GREETING=hi",
		"--workdir", "/work", "--timeout", "10m", "--cpu", "1", "--memory", "256", "--tag", "team=x")

	t.Run("exec streams and exits with the code", func(t *testing.T) {
		out, errs, code := sbx(t, "", "exec", "--env", "WHO=there", id, "--", "sh", "-c", "echo $GREETING $WHO; pwd; echo warn >&2; exit 5")
		if out != "hi there\n/work\n" || errs != "warn\n" || code != 5 {
			t.Errorf("got %q / %q code %d", out, errs, code)
		}
	})
	t.Run("exec -i forwards stdin", func(t *testing.T) {
		out, _, code := sbx(t, "line1\nline2\n", "exec", "-i", id, "--", "wc", "-l")
		if strings.TrimSpace(out) != "2" || code != 0 {
			t.Errorf("got %q code %d", out, code)
		}
	})
	t.Run("exec timeout exits 124", func(t *testing.T) {
		if _, _, code := sbx(t, "", "exec", "--timeout", "1s", id, "--", "sleep", "30"); code != 124 {
			t.Errorf("got code %d, want 124", code)
		}
	})
	t.Run("exec failure of sbx itself exits 125", func(t *testing.T) {
		_, errs, code := sbx(t, "", "exec", "sb-0000000000000000", "--", "true")
		if code != 125 || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("got code %d stderr %q, want 125 and one line", code, errs)
		}
	})
	t.Run("ls and json", func(t *testing.T) {
		out, _, code := sbx(t, "", "ls", "--app", app, "--tag", "team=x")
		if code != 0 || !strings.Contains(out, id) {
			t.Errorf("ls: got %q code %d", out, code)
		}
		out, _, _ = sbx(t, "", "ls", "--app", app, "--json")
		var list []map[string]any
		if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 || list[0]["id"] != id {
			t.Errorf("ls --json: got %q (%v)", out, err)
		}
		out, _, _ = sbx(t, "", "ls", "--app", app, "--tag", "team=y")
		if strings.Contains(out, id) {
			t.Errorf("ls --tag team=y lists %s", id)
		}
	})
	t.Run("inspect by APP/NAME", func(t *testing.T) {
		out, _, code := sbx(t, "", "inspect", app+"/box", "--json")
		var v map[string]any
		if err := json.Unmarshal([]byte(out), &v); err != nil || code != 0 || v["id"] != id || v["memory_mib"] != float64(256) {
			t.Errorf("inspect: got %q code %d (%v)", out, code, err)
		}
		out, _, code = sbx(t, "", "inspect", id)
		if code != 0 || !strings.Contains(out, "box") {
			t.Errorf("inspect human: got %q", out)
		}
	})
	t.Run("tag", func(t *testing.T) {
		if _, errs, code := sbx(t, "", "tag", id, "stage=prod", "team=z"); code != 0 {
			t.Fatalf("tag: %s", errs)
		}
		out, _, _ := sbx(t, "", "ls", "--app", app, "--tag", "stage=prod")
		if !strings.Contains(out, id) {
			t.Errorf("ls by the new tag misses the sandbox: %q", out)
		}
	})
	t.Run("poll, terminate, wait", func(t *testing.T) {
		if out, _, _ := sbx(t, "", "poll", id); strings.TrimSpace(out) != "running" {
			t.Errorf("poll: got %q, want running", out)
		}
		if _, errs, code := sbx(t, "", "terminate", id); code != 0 {
			t.Fatalf("terminate: %s", errs)
		}
		if _, _, code := sbx(t, "", "wait", id); code != 137 {
			t.Errorf("wait: got code %d, want 137", code)
		}
		if out, _, _ := sbx(t, "", "poll", id); strings.TrimSpace(out) != "137" {
			t.Errorf("poll: got %q, want 137", out)
		}
	})
	t.Run("errors are one line", func(t *testing.T) {
		_, errs, code := sbx(t, "", "inspect", "sb-0000000000000000")
		if code == 0 || strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.Contains(errs, "not found") {
			t.Errorf("got code %d stderr %q", code, errs)
		}
		_, errs, code = sbx(t, "", "create", "--image", "busybox", "--workdir", "relative")
		if code == 0 || !strings.Contains(errs, "absolute") {
			t.Errorf("relative workdir: got code %d stderr %q", code, errs)
		}
	})
}

func TestCLIEntrypointLogsWaitAndSecret(t *testing.T) {
	if _, errs, code := sbx(t, "", "secret", "create", "cli-secret", "TOKEN=abc123"); code != 0 {
		t.Fatalf("secret create: %s", errs)
	}
	id := sbxCreate(t, "--image", "busybox", "--secret", "cli-secret", "--", "sh", "-c", "echo token=$TOKEN; echo bye >&2; exit 4")
	if _, _, code := sbx(t, "", "wait", id); code != 4 {
		t.Errorf("wait: got %d, want 4", code)
	}
	out, errs, code := sbx(t, "", "logs", "-f", id)
	if out != "token=abc123\n" || errs != "bye\n" || code != 0 {
		t.Errorf("logs: got %q / %q code %d", out, errs, code)
	}
	out, _, _ = sbx(t, "", "inspect", id, "--json")
	if strings.Contains(out, "abc123") {
		t.Errorf("inspect shows a secret value: %s", out)
	}
}
