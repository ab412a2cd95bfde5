package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseKV(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		k, v    string
		wantErr bool
	}{
		{name: "plain", in: "A=1", k: "A", v: "1"},
		{name: "empty value", in: "A=", k: "A", v: ""},
		{name: "value with equals", in: "URL=a=b=c", k: "URL", v: "a=b=c"},
		{name: "missing equals", in: "A", wantErr: true},
		{name: "empty key", in: "=1", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, v, err := parseKV(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseKV(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if k != tt.k || v != tt.v {
				t.Errorf("parseKV(%q) = %q, %q, want %q, %q", tt.in, k, v, tt.k, tt.v)
			}
		})
	}
}

func TestParseKVsRedacts(t *testing.T) {
	_, err := parseKVs([]string{"A=1", "hunter2"}, true)
	if err == nil {
		t.Fatal("got no error, want one")
	}
	if got := err.Error(); strings.Contains(got, "hunter2") {
		t.Errorf("error %q quotes the argument, want it redacted", got)
	}
	m, err := parseKVs([]string{"A=1", "B=2", "A=3"}, false)
	if err != nil {
		t.Fatal(err)
	}
	if m["A"] != "3" || m["B"] != "2" || len(m) != 2 {
		t.Errorf("got %v, want map[A:3 B:2]", m)
	}
}

func TestKVFlagRepeats(t *testing.T) {
	var f kvFlag
	for _, s := range []string{"B=2", "A=1", "B=3"} {
		if err := f.Set(s); err != nil {
			t.Fatalf("Set(%q): %v", s, err)
		}
	}
	if got, want := f.String(), "A=1,B=3"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if err := f.Set("nope"); err == nil {
		t.Error("Set(\"nope\") got no error, want one")
	}
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{in: "30s", want: 30 * time.Second},
		{in: "5m", want: 5 * time.Minute},
		{in: "2h", want: 2 * time.Hour},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "90", want: 90 * time.Second},
		{in: "1.5", want: 1500 * time.Millisecond},
		{in: "0", want: 0},
		{in: "-5", wantErr: true},
		{in: "-1m", wantErr: true},
		{in: "5 minutes", wantErr: true},
		{in: "", wantErr: true},
		{in: "NaN", wantErr: true},
		{in: "1e300", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseDuration(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseDuration(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("parseDuration(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestExecArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		dashAt  int
		id      string
		argv    []string
		wantErr bool
	}{
		{name: "id dash cmd", args: []string{"sb-1", "ls", "-l"}, dashAt: 1, id: "sb-1", argv: []string{"ls", "-l"}},
		{name: "no dash", args: []string{"sb-1", "ls"}, dashAt: -1, id: "sb-1", argv: []string{"ls"}},
		{name: "app/name", args: []string{"web/api", "true"}, dashAt: 1, id: "web/api", argv: []string{"true"}},
		{name: "no command after dash", args: []string{"sb-1"}, dashAt: 1, wantErr: true},
		{name: "no command", args: []string{"sb-1"}, dashAt: -1, wantErr: true},
		{name: "nothing", args: nil, dashAt: -1, wantErr: true},
		{name: "no id", args: []string{"ls"}, dashAt: 0, wantErr: true},
		{name: "two ids", args: []string{"sb-1", "sb-2", "ls"}, dashAt: 2, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, argv, err := execArgs(tt.args, tt.dashAt)
			if (err != nil) != tt.wantErr {
				t.Fatalf("execArgs(%q, %d) error = %v, want error %v", tt.args, tt.dashAt, err, tt.wantErr)
			}
			if id != tt.id || !slices.Equal(argv, tt.argv) {
				t.Errorf("execArgs(%q, %d) = %q, %q, want %q, %q", tt.args, tt.dashAt, id, argv, tt.id, tt.argv)
			}
		})
	}
}

func TestEntrypointArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		dashAt  int
		want    []string
		wantErr bool
	}{
		{name: "none", args: nil, dashAt: -1, want: []string{}},
		{name: "after dash", args: []string{"sh", "-c", "x"}, dashAt: 0, want: []string{"sh", "-c", "x"}},
		{name: "before dash", args: []string{"oops", "sh"}, dashAt: 1, wantErr: true},
		{name: "without dash", args: []string{"sleep", "1"}, dashAt: -1, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := entrypointArgs(tt.args, tt.dashAt)
			if (err != nil) != tt.wantErr {
				t.Fatalf("entrypointArgs(%q, %d) error = %v, want error %v", tt.args, tt.dashAt, err, tt.wantErr)
			}
			if !tt.wantErr && !slices.Equal(got, tt.want) {
				t.Errorf("entrypointArgs(%q, %d) = %q, want %q", tt.args, tt.dashAt, got, tt.want)
			}
		})
	}
}

func TestAge(t *testing.T) {
	now := time.Date(2025, 1, 10, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		ago  time.Duration
		want string
	}{
		{0, "0s"},
		{45 * time.Second, "45s"},
		{12*time.Minute + 5*time.Second, "12m"},
		{3 * time.Hour, "3h"},
		{47 * time.Hour, "47h"},
		{72 * time.Hour, "3d"},
		{-time.Minute, "0s"}, // clock skew
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := age(now, now.Add(-tt.ago)); got != tt.want {
				t.Errorf("age(%v ago) = %q, want %q", tt.ago, got, tt.want)
			}
		})
	}
	if got := age(now, time.Time{}); got != "-" {
		t.Errorf("age(zero) = %q, want \"-\"", got)
	}
}
