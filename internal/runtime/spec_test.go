package runtime

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandboxd/sandboxd/internal/errdefs"
)

func baseSpec() Spec {
	return Spec{
		ID: "sb-0123456789abcdef", BundleDir: "/b", RootfsPath: "/r", ScratchDir: "/s",
		LogPath: "/l/init.log", Args: []string{"/bin/sh"},
	}
}

func TestResources(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	tests := []struct {
		name               string
		in                 Resources
		wantNil            bool
		wantQuota, wantMem *int64
		wantPids           int64
	}{
		{name: "none", in: Resources{}, wantNil: true},
		{name: "one cpu", in: Resources{CPUs: 1}, wantQuota: i64(100000)},
		{name: "half cpu", in: Resources{CPUs: 0.5}, wantQuota: i64(50000)},
		{name: "two and a half", in: Resources{CPUs: 2.5}, wantQuota: i64(250000)},
		{name: "tiny cpu clamps to 1ms", in: Resources{CPUs: 0.001}, wantQuota: i64(1000)},
		{name: "memory", in: Resources{MemoryBytes: 256 << 20}, wantMem: i64(256 << 20)},
		{name: "pids", in: Resources{Pids: 64}, wantPids: 64},
		{name: "all", in: Resources{CPUs: 1, MemoryBytes: 1 << 30, Pids: 10}, wantQuota: i64(100000), wantMem: i64(1 << 30), wantPids: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := resources(tt.in)
			if tt.wantNil {
				if got != nil {
					t.Fatalf("got %+v, want nil", got)
				}
				return
			}
			switch {
			case tt.wantQuota == nil && got.CPU != nil:
				t.Errorf("got CPU %+v, want none", got.CPU)
			case tt.wantQuota != nil && (got.CPU == nil || *got.CPU.Quota != *tt.wantQuota || *got.CPU.Period != cfsPeriod):
				t.Errorf("got CPU %+v, want quota %d period %d", got.CPU, *tt.wantQuota, cfsPeriod)
			}
			switch {
			case tt.wantMem == nil && got.Memory != nil:
				t.Errorf("got memory %+v, want none", got.Memory)
			case tt.wantMem != nil && (got.Memory == nil || *got.Memory.Limit != *tt.wantMem):
				t.Errorf("got memory %+v, want limit %d", got.Memory, *tt.wantMem)
			}
			if (got.Pids == nil) != (tt.wantPids == 0) || (got.Pids != nil && got.Pids.Limit != tt.wantPids) {
				t.Errorf("got pids %+v, want %d", got.Pids, tt.wantPids)
			}
		})
	}
}

func TestToOCI(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Spec)
		check func(t *testing.T, o *specs.Spec)
	}{
		{name: "defaults", edit: func(*Spec) {}, check: func(t *testing.T, o *specs.Spec) {
			if o.Root.Path != "/r" || o.Root.Readonly {
				t.Errorf("got root %+v, want /r writable", o.Root)
			}
			if o.Process.Cwd != "/" || o.Hostname != "sb-0123456789abcdef" {
				t.Errorf("got cwd %q hostname %q, want / and the id", o.Process.Cwd, o.Hostname)
			}
			if !slices.Contains(o.Process.Env, defaultPath) {
				t.Errorf("got env %v, want default PATH", o.Process.Env)
			}
			if o.Linux.CgroupsPath != "/sandboxd/sb-0123456789abcdef" {
				t.Errorf("got cgroups path %q", o.Linux.CgroupsPath)
			}
			if o.Linux.Resources != nil {
				t.Errorf("got resources %+v, want nil", o.Linux.Resources)
			}
			if o.Process.Terminal {
				t.Error("got terminal, want none")
			}
		}},
		{name: "fresh netns", edit: func(*Spec) {}, check: func(t *testing.T, o *specs.Spec) {
			if ns := netns(o); ns == nil || ns.Path != "" {
				t.Errorf("got netns %+v, want a new one", ns)
			}
		}},
		{name: "join netns", edit: func(s *Spec) { s.NetNSPath = "/run/netns/x" }, check: func(t *testing.T, o *specs.Spec) {
			if ns := netns(o); ns == nil || ns.Path != "/run/netns/x" {
				t.Errorf("got netns %+v, want /run/netns/x", ns)
			}
		}},
		{name: "mounts", edit: func(s *Spec) {
			s.Mounts = []Mount{{Source: "/h/ro", Destination: "/ro", ReadOnly: true}, {Source: "/h/rw", Destination: "/rw"}}
		}, check: func(t *testing.T, o *specs.Spec) {
			want := map[string][]string{"/ro": {"rbind", "ro"}, "/rw": {"rbind"}}
			found := 0
			for _, m := range o.Mounts {
				if w, ok := want[m.Destination]; ok {
					found++
					if m.Type != "bind" || !slices.Equal(m.Options, w) || m.Source != "/h"+m.Destination {
						t.Errorf("got mount %+v, want bind from /h%s with %v", m, m.Destination, w)
					}
				}
			}
			if found != 2 {
				t.Errorf("got %d of the bind mounts, want 2", found)
			}
		}},
		{name: "env with path, cwd, hostname", edit: func(s *Spec) {
			s.Env = []string{"PATH=/x", "A=b"}
			s.Cwd, s.Hostname = "/work", "h"
		}, check: func(t *testing.T, o *specs.Spec) {
			if !slices.Equal(o.Process.Env, []string{"PATH=/x", "A=b"}) {
				t.Errorf("got env %v", o.Process.Env)
			}
			if o.Process.Cwd != "/work" || o.Hostname != "h" {
				t.Errorf("got cwd %q hostname %q", o.Process.Cwd, o.Hostname)
			}
		}},
		{name: "extra capability", edit: func(s *Spec) { s.Capabilities = []string{"CAP_SYS_ADMIN", "CAP_KILL"} }, check: func(t *testing.T, o *specs.Spec) {
			c := o.Process.Capabilities
			for _, set := range [][]string{c.Bounding, c.Effective, c.Permitted} {
				if !slices.Contains(set, "CAP_SYS_ADMIN") {
					t.Errorf("got %v, want CAP_SYS_ADMIN", set)
				}
				if n := len(slices.DeleteFunc(slices.Clone(set), func(s string) bool { return s != "CAP_KILL" })); n != 1 {
					t.Errorf("got CAP_KILL %d times, want once", n)
				}
			}
		}},
		{name: "init-only capability", edit: func(s *Spec) { s.InitCapabilities = []string{"CAP_SYS_ADMIN", "CAP_KILL"} }, check: func(t *testing.T, o *specs.Spec) {
			c := o.Process.Capabilities
			if slices.Contains(c.Bounding, "CAP_SYS_ADMIN") {
				t.Errorf("got bounding %v, want no CAP_SYS_ADMIN (children must not get it)", c.Bounding)
			}
			for _, set := range [][]string{c.Effective, c.Permitted} {
				if !slices.Contains(set, "CAP_SYS_ADMIN") || !slices.Contains(set, "CAP_CHOWN") {
					t.Errorf("got %v, want the default set and CAP_SYS_ADMIN", set)
				}
			}
			// CAP_KILL is in the bounding set already: it needs no carrying.
			if !slices.Equal(c.Inheritable, []string{"CAP_SYS_ADMIN"}) {
				t.Errorf("got inheritable %v, want [CAP_SYS_ADMIN]", c.Inheritable)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := baseSpec()
			tt.edit(&s)
			if err := s.validate(); err != nil {
				t.Fatalf("validate: %v", err)
			}
			tt.check(t, s.toOCI("/sandboxd/"+s.ID))
		})
	}
}

func netns(o *specs.Spec) *specs.LinuxNamespace {
	for i, ns := range o.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			return &o.Linux.Namespaces[i]
		}
	}
	return nil
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Spec)
	}{
		{"bad id", func(s *Spec) { s.ID = "-x" }},
		{"id with slash", func(s *Spec) { s.ID = "a/b" }},
		{"relative rootfs", func(s *Spec) { s.RootfsPath = "r" }},
		{"no scratch", func(s *Spec) { s.ScratchDir = "" }},
		{"no args", func(s *Spec) { s.Args = nil }},
		{"relative mount", func(s *Spec) { s.Mounts = []Mount{{Source: "x", Destination: "/y"}} }},
		{"bad capability", func(s *Spec) { s.Capabilities = []string{"sys_admin"} }},
		{"bad init capability", func(s *Spec) { s.InitCapabilities = []string{"SYS_ADMIN"} }},
		{"negative memory", func(s *Spec) { s.Resources.MemoryBytes = -1 }},
		{"relative netns", func(s *Spec) { s.NetNSPath = "netns" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := baseSpec()
			tt.edit(&s)
			if err := s.validate(); !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("got %v, want ErrInvalidArgument", err)
			}
		})
	}
}

func TestWriteSpec(t *testing.T) {
	dir := t.TempDir()
	s := baseSpec()
	s.BundleDir = dir
	if err := writeSpec(&s, "/sandboxd/x"); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "config.json")
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("got mode %v, want 0600", fi.Mode().Perm())
	}
	var o specs.Spec
	b, _ := os.ReadFile(p)
	if err := json.Unmarshal(b, &o); err != nil {
		t.Fatal(err)
	}
	if o.Process.Args[0] != "/bin/sh" {
		t.Errorf("got args %v", o.Process.Args)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("got %d files in the bundle, want only config.json", len(entries))
	}
}
