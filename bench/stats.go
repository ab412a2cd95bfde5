package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// figure is one row of a section's table: sandboxd's p50/p95 beside the raw
// engine's (or another reference), their ratio and the target.
type figure struct {
	Metric string  `json:"metric"`
	Unit   string  `json:"unit"` // "ms" or "MiB"
	N      int     `json:"n"`
	P50    float64 `json:"p50"`
	P95    float64 `json:"p95"`
	// Ref is what the figure is compared with ("raw runsc", "host os/exec");
	// empty for a figure of sandboxd alone (a breakdown).
	Ref    string  `json:"ref,omitempty"`
	RefN   int     `json:"ref_n,omitempty"`
	RefP50 float64 `json:"ref_p50,omitempty"`
	RefP95 float64 `json:"ref_p95,omitempty"`
	// Ratio is P50 / RefP50.
	Ratio float64 `json:"ratio,omitempty"`
	// Target says what is wanted, in words ("<= 1.2x"); Met whether the
	// p50 ratio meets it (nil: no target).
	Target string `json:"target,omitempty"`
	Met    *bool  `json:"met,omitempty"`
}

// dist is a set of samples in the figure's unit.
type dist []float64

func durations(ds []time.Duration) dist {
	out := make(dist, len(ds))
	for i, d := range ds {
		out[i] = float64(d) / float64(time.Millisecond)
	}
	return out
}

// pct returns the p-th percentile (0 < p <= 100) by nearest rank; NaN for
// no samples.
func (d dist) pct(p float64) float64 {
	if len(d) == 0 {
		return math.NaN()
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[max(rank, 1)-1]
}

// newFigure returns a figure of ours alone.
func newFigure(metric, unit string, ours dist) figure {
	return figure{Metric: metric, Unit: unit, N: len(ours), P50: ours.pct(50), P95: ours.pct(95)}
}

// against adds the reference distribution and the ratio of the p50s.
func (f figure) against(ref string, d dist) figure {
	f.Ref, f.RefN, f.RefP50, f.RefP95 = ref, len(d), d.pct(50), d.pct(95)
	if f.RefP50 > 0 {
		f.Ratio = f.P50 / f.RefP50
	}
	return f
}

// atMost sets a target on the ratio: met when Ratio <= limit.
func (f figure) atMost(limit float64, words string) figure {
	f.Target = words
	met := f.Ratio > 0 && f.Ratio <= limit
	f.Met = &met
	return f
}

// report is the JSON document written by -json.
type report struct {
	Time     time.Time       `json:"time"`
	N        int             `json:"n"`
	Cores    int             `json:"cores"`
	Kernel   string          `json:"kernel"`
	Sections []sectionReport `json:"sections"`
}

type sectionReport struct {
	Name    string   `json:"name"`
	Figures []figure `json:"figures"`
}

// printTable writes a section's figures as an aligned table.
func printTable(w io.Writer, name string, figs []figure) {
	fmt.Fprintf(w, "\n== %s ==\n", name)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "metric\tsandboxd p50\tp95\tref p50\tp95\tratio\ttarget\tmet?\t")
	fmt.Fprintln(tw, "------\t------------\t---\t-------\t---\t-----\t------\t----\t")
	for _, f := range figs {
		ref50, ref95, ratio := "-", "-", "-"
		if f.Ref != "" {
			ref50, ref95 = num(f.RefP50, f.Unit), num(f.RefP95, f.Unit)
			if f.Ratio > 0 {
				ratio = fmt.Sprintf("%.2fx", f.Ratio)
			}
		}
		target, met := "-", "-"
		if f.Target != "" {
			target = f.Target
		}
		if f.Met != nil {
			met = map[bool]string{true: "yes", false: "NO"}[*f.Met]
		}
		metric := fmt.Sprintf("%s (n=%d", f.Metric, f.N)
		if f.Ref != "" {
			metric += fmt.Sprintf("; ref: %s n=%d", f.Ref, f.RefN)
		}
		metric += ")"
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			metric, num(f.P50, f.Unit), num(f.P95, f.Unit), ref50, ref95, ratio, target, met)
	}
	tw.Flush()
}

func num(v float64, unit string) string {
	if math.IsNaN(v) {
		return "-"
	}
	prec := 1
	if unit == "ms" && v < 10 {
		prec = 2
	}
	return strings.TrimSpace(fmt.Sprintf("%.*f %s", prec, v, unit))
}
