package agent

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sandboxd/sandboxd/internal/testutil"
)

func TestExitProgramRunsAndExitsZero(t *testing.T) {
	prog := exitProgram()
	if prog == nil {
		t.Skip("no exit program for this architecture")
	}
	p := filepath.Join(t.TempDir(), "exit")
	if err := os.WriteFile(p, prog, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(p).CombinedOutput()
	if err != nil {
		t.Fatalf("exit program: %v (output %q)", err, out)
	}
	if len(out) != 0 {
		t.Fatalf("exit program wrote %q", out)
	}
}

func TestAgentWithoutEntrypointWarmsUp(t *testing.T) {
	if exitProgram() == nil {
		t.Skip("no exit program for this architecture")
	}
	var logs testutil.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := New(Config{Token: "warm"}, Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "warm-up done") {
		if time.Now().After(deadline) {
			t.Fatalf("no warm-up within 10 s; log:\n%s", logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "status=0") {
		t.Fatalf("warm-up did not exit 0; log:\n%s", logs.String())
	}
}
