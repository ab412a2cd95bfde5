//go:build ignore

// Command seccompgen writes runsc's precompiled seccomp-bpf programs, as
// gVisor's own (Bazel) build does and a plain `go install` of runsc does not.
//
// Without them, every sandbox process (the sentry) and every gofer compiles
// its seccomp filter at start: runsc logs "No precompiled program found ...
// This slows down sandbox startup", and the sentry's compile took 40 ms of
// a create on a busy 2-core host (about 50 ms in a restore on an idle one,
// ENGINE-NOTES).
//
// It compiles the programs with gVisor's own code (the PrecompiledPrograms
// of runsc/boot/filter/config and runsc/fsgofer/filter/config), keeps those
// of the configurations sandboxd runs (the systrap platform, no GPU, TPU or
// RDMA proxies; netstack or host network, with or without directfs), and
// rewrites the filter_precompiled.go of the two filter packages to register
// them. scripts/deps.sh runs it inside a writable copy of the pinned gVisor
// module, which it then builds runsc from (so the generator always runs the
// pinned gVisor code, with that module's own dependencies):
//
//	cd GVISOR_COPY && go run ./sandboxd-seccompgen/main.go .
//
// (It is not part of the sandboxd module: the build constraint keeps it
// out.) A configuration not kept still works: runsc compiles its filter at
// start, as before.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gvisor.dev/gvisor/pkg/seccomp/precompiledseccomp"
	bootconfig "gvisor.dev/gvisor/runsc/boot/filter/config"
	goferconfig "gvisor.dev/gvisor/runsc/fsgofer/filter/config"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: seccompgen GVISOR_MODULE_COPY")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "seccompgen:", err)
		os.Exit(1)
	}
}

func run(modDir string) error {
	boot, err := bootconfig.PrecompiledPrograms()
	if err != nil {
		return fmt.Errorf("sentry programs: %w", err)
	}
	gofer, err := goferconfig.PrecompiledPrograms()
	if err != nil {
		return fmt.Errorf("gofer programs: %w", err)
	}
	for _, f := range []struct {
		pkg, name string
		progs     []precompiledseccomp.Program
	}{
		{"runsc/boot/filter", "boot", keep(boot, sentryConfig)},
		{"runsc/fsgofer/filter", "gofer", keep(gofer, goferConfig)},
	} {
		if len(f.progs) == 0 {
			return fmt.Errorf("%s: no program of sandboxd's configurations", f.pkg)
		}
		orig := filepath.Join(modDir, f.pkg, "filter_precompiled.go")
		src, err := os.ReadFile(orig)
		if err != nil {
			return err
		}
		out, err := withPrograms(string(src), f.progs)
		if err != nil {
			return fmt.Errorf("%s: %w", orig, err)
		}
		if err := os.WriteFile(orig, []byte(out), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "seccompgen: %d %s programs\n", len(f.progs), f.name)
	}
	return nil
}

// sentryConfig reports whether a sentry program (named by its
// configuration) is one sandboxd runs: systrap, no device proxies.
func sentryConfig(name string) bool {
	return strings.Contains(name, `Platform="systrap"`) &&
		!strings.Contains(name, "NVProxy=true") &&
		!strings.Contains(name, "TPUProxy=true") &&
		!strings.Contains(name, "RDMAProxy=true")
}

// goferConfig reports whether a gofer program is one sandboxd runs: a
// static runsc (no cgo).
func goferConfig(name string) bool { return strings.Contains(name, "CgoEnabled=false") }

// keep returns the programs of ps that want keeps, by name.
func keep(ps []precompiledseccomp.Program, want func(string) bool) []precompiledseccomp.Program {
	var out []precompiledseccomp.Program
	for _, p := range ps {
		if want(p.Name) {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// withPrograms returns src, a filter_precompiled.go as the module ships it
// (precompilation disabled, no program registered), registering ps.
func withPrograms(src string, ps []precompiledseccomp.Program) (string, error) {
	const (
		disabled = "const PrecompilationDisabledAtBuildTime = true"
		register = "\tprograms := make(map[string]precompiledseccomp.Program)\n"
	)
	if strings.Count(src, disabled) != 1 || strings.Count(src, register) != 1 {
		return "", fmt.Errorf("not the file this generator knows (want one %q and one %q)", disabled, strings.TrimSpace(register))
	}
	var b strings.Builder
	b.WriteString(register)
	for _, p := range ps {
		fmt.Fprintf(&b, "\tprograms[%q] = precompiledseccomp.Program{\n\t\tName: %q,\n\t\tBytecode32: []uint32{", p.Name, p.Name)
		for i, w := range p.Bytecode32 {
			if i%12 == 0 {
				b.WriteString("\n\t\t\t")
			}
			fmt.Fprintf(&b, "%#x, ", w)
		}
		b.WriteString("\n\t\t},\n\t\tVarOffsets: map[string][]int{\n")
		vars := make([]string, 0, len(p.VarOffsets))
		for v := range p.VarOffsets {
			vars = append(vars, v)
		}
		sort.Strings(vars)
		for _, v := range vars {
			fmt.Fprintf(&b, "\t\t\t%q: %#v,\n", v, p.VarOffsets[v])
		}
		b.WriteString("\t\t},\n\t}\n")
	}
	src = strings.Replace(src, disabled, "const PrecompilationDisabledAtBuildTime = false", 1)
	return strings.Replace(src, register, b.String(), 1), nil
}
