// Package sandbox is the sandbox manager: the lifecycle state machine of every
// sandbox on this machine (create, run, finish), its names, tags, lifetime
// timeouts, entrypoint logs and execs. It drives the engine through the small
// Provisioner interface and talks to the agent inside through AgentConn; both
// are wired in cmd/sandboxd. Only internal/server and cmd/sandboxd import it.
package sandbox

import (
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

// State is where a sandbox is in its life.
type State string

const (
	StateCreating State = "creating"
	StateRunning  State = "running"
	StateFinished State = "finished"
)

// FinishReason says why a sandbox finished.
type FinishReason string

const (
	ReasonExited     FinishReason = "exited"
	ReasonTerminated FinishReason = "terminated"
	ReasonTimeout    FinishReason = "timeout"
	ReasonLost       FinishReason = "lost"
	ReasonFailed     FinishReason = "failed"
)

// Exit codes reported for sandboxes that did not exit by themselves, as the
// hosted services report them.
const (
	ExitCodeTimeout    = 124
	ExitCodeTerminated = 137
	ExitCodeLost       = 255
)

// Limits on what a caller may ask for.
const (
	DefaultTimeout = 5 * time.Minute
	MaxTimeout     = 24 * time.Hour
	DefaultApp     = "default"
	DefaultCPU     = 1.0
	DefaultMemMiB  = 1024
	DefaultPids    = 4096
	MinMemMiB      = 16
)

// Resources are a sandbox's limits.
type Resources struct {
	CPU       float64 `json:"cpu"`
	MemoryMiB int64   `json:"memory_mib"`
	Pids      int64   `json:"pids"`
}

// Spec is what a caller asks for at create. Secret values are not part of it,
// only the secrets' names, so a Spec may be stored and shown.
type Spec struct {
	App        string            `json:"app"`
	Name       string            `json:"name,omitempty"`
	Image      string            `json:"image"`
	Entrypoint []string          `json:"entrypoint,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
	Secrets    []string          `json:"secrets,omitempty"`
	Workdir    string            `json:"workdir,omitempty"`
	Timeout    time.Duration     `json:"timeout"`
	Resources  Resources         `json:"resources"`
	Tags       map[string]string `json:"tags,omitempty"`
	// Mounts are images mounted at create time (see ImageMount).
	Mounts []ImageMount `json:"mounts,omitempty"`
}

// Sandbox is the record of one sandbox, live or finished.
type Sandbox struct {
	ID           string
	Spec         Spec
	ImageID      string
	Tags         map[string]string
	State        State
	FinishReason FinishReason
	ExitCode     int
	Error        string
	CreatedAt    time.Time
	StartedAt    time.Time
	FinishedAt   time.Time
	Deadline     time.Time
}

var (
	nameRE   = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)
	envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	idRE     = regexp.MustCompile(`^sb-[0-9a-f]{16}$`)
)

// ValidName reports whether s may name an app or a sandbox.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// ValidID reports whether s has the form of a sandbox id.
func ValidID(s string) bool { return idRE.MatchString(s) }

// normalize fills defaults into spec and checks it. It changes nothing outside
// spec; a bad spec is an ErrInvalidArgument naming the problem.
func (s *Spec) normalize() error {
	if s.App == "" {
		s.App = DefaultApp
	}
	if !ValidName(s.App) {
		return errdefs.Invalid("bad app name %q: use letters, digits, '.', '_' or '-', at most 63, starting with a letter or digit", s.App)
	}
	if s.Name != "" && !ValidName(s.Name) {
		return errdefs.Invalid("bad sandbox name %q: use letters, digits, '.', '_' or '-', at most 63, starting with a letter or digit", s.Name)
	}
	if err := checkEnv(s.Env); err != nil {
		return err
	}
	if s.Workdir != "" {
		if err := checkWorkdir(s.Workdir); err != nil {
			return err
		}
	}
	if len(s.Entrypoint) > 0 && s.Entrypoint[0] == "" {
		return errdefs.Invalid("entrypoint: empty program name")
	}
	switch {
	case s.Timeout == 0:
		s.Timeout = DefaultTimeout
	case s.Timeout < time.Second || s.Timeout > MaxTimeout:
		return errdefs.Invalid("timeout %v out of range: must be between 1s and %v", s.Timeout, MaxTimeout)
	}
	r := &s.Resources
	switch {
	case r.CPU == 0:
		r.CPU = DefaultCPU
	case r.CPU < 0.05 || r.CPU > 64:
		return errdefs.Invalid("cpu %g out of range: must be between 0.05 and 64 cores", r.CPU)
	}
	switch {
	case r.MemoryMiB == 0:
		r.MemoryMiB = DefaultMemMiB
	case r.MemoryMiB < MinMemMiB || r.MemoryMiB > 1<<20:
		return errdefs.Invalid("memory %d MiB out of range: must be between %d MiB and 1 TiB", r.MemoryMiB, MinMemMiB)
	}
	switch {
	case r.Pids == 0:
		r.Pids = DefaultPids
	case r.Pids < 16 || r.Pids > 1<<22:
		return errdefs.Invalid("pids limit %d out of range: must be between 16 and %d", r.Pids, 1<<22)
	}
	if err := checkTags(s.Tags); err != nil {
		return err
	}
	for _, n := range s.Secrets {
		if n == "" {
			return errdefs.Invalid("empty secret name")
		}
	}
	return nil
}

func checkWorkdir(d string) error {
	if !path.IsAbs(d) {
		return errdefs.Invalid("workdir %q is not an absolute path", d)
	}
	if strings.ContainsRune(d, 0) {
		return errdefs.Invalid("workdir contains a NUL byte")
	}
	return nil
}

func checkEnv(env map[string]string) error {
	for k, v := range env {
		if !envKeyRE.MatchString(k) {
			return errdefs.Invalid("bad environment variable name %q", k)
		}
		if strings.ContainsRune(v, 0) {
			return errdefs.Invalid("environment variable %s holds a NUL byte", k)
		}
	}
	return nil
}

func checkTags(tags map[string]string) error {
	if len(tags) > 64 {
		return errdefs.Invalid("too many tags (%d): at most 64", len(tags))
	}
	for k, v := range tags {
		if k == "" || len(k) > 128 || strings.ContainsAny(k, "=\x00") {
			return errdefs.Invalid("bad tag key %q: 1 to 128 characters, no '='", k)
		}
		if len(v) > 512 || strings.ContainsRune(v, 0) {
			return errdefs.Invalid("bad value for tag %q: at most 512 characters", k)
		}
	}
	return nil
}

// hasTags reports whether have holds every key/value of want.
func hasTags(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("marshal %T: %v", v, err))
	}
	return string(b)
}
