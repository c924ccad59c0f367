package agent

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/nix-ota/nix-ota/status"
)

// parseProm parses a textfile with Prometheus' own text parser, the one
// node_exporter's textfile collector uses.
func parseProm(text string) (map[string]*dto.MetricFamily, error) {
	var p expfmt.TextParser
	return p.TextToMetricFamilies(strings.NewReader(text))
}

// labelsOf returns the labels of a family's only sample.
func labelsOf(t *testing.T, fams map[string]*dto.MetricFamily, name string) map[string]string {
	t.Helper()
	mf := fams[name]
	if mf == nil || len(mf.GetMetric()) != 1 {
		t.Fatalf("%s: want one sample, got %v", name, mf)
	}
	l := map[string]string{}
	for _, lp := range mf.GetMetric()[0].GetLabel() {
		l[lp.GetName()] = lp.GetValue()
	}
	return l
}

var hostileLabels = []string{
	`plain`,
	`quo"te`,
	`back\slash`,
	`trailing\`,
	"new\nline",
	"carriage\rreturn\ttab",
	`already \"escaped\" \n`,
	`\x00 \u2028 %q-style`,
	"nul\x00byte",
	"ünïcödé ☃ 𝄞 \u2028 \u202e",
	"invalid\xff\xfeutf8",
	"",
}

// TestPrometheusLabels: the textfile parses with Prometheus' parser, and
// device id, version and channel come back as written, whatever they hold.
func TestPrometheusLabels(t *testing.T) {
	for _, v := range hostileLabels {
		t.Run(fmt.Sprintf("%q", v), func(t *testing.T) {
			st := status.Status{DeviceID: "dev-" + v, AgentVersion: "1.0" + v, Channel: v + "ch", State: status.RolledBack,
				Revision: 7, LastError: "x", CheckedAt: time.Unix(1700000000, 0), ChangedAt: time.Unix(1690000000, 0)}
			text := prometheus(st)
			fams, err := parseProm(text)
			if err != nil {
				t.Fatalf("Prometheus cannot parse the textfile: %v\n%s", err, text)
			}
			want := func(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }
			info := labelsOf(t, fams, "nix_ota_info")
			if info["device"] != want(st.DeviceID) || info["version"] != want(st.AgentVersion) {
				t.Errorf("nix_ota_info labels %q, want device %q version %q", info, want(st.DeviceID), want(st.AgentVersion))
			}
			if ch := labelsOf(t, fams, "nix_ota_revision")["channel"]; ch != want(st.Channel) {
				t.Errorf("channel label %q, want %q", ch, want(st.Channel))
			}
			if v := fams["nix_ota_revision"].GetMetric()[0].GetGauge().GetValue(); v != 7 {
				t.Errorf("revision %v", v)
			}
			checkStates(t, fams, st.State)
		})
	}
}

// checkStates: one nix_ota_state sample per state, 1 for the current one.
func checkStates(t *testing.T, fams map[string]*dto.MetricFamily, current string) {
	t.Helper()
	got := map[string]float64{}
	for _, m := range fams["nix_ota_state"].GetMetric() {
		got[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
	}
	if len(got) != len(status.States) {
		t.Fatalf("states %v, want one per status.States", got)
	}
	for _, s := range status.States {
		if want := map[bool]float64{true: 1, false: 0}[s == current]; got[s] != want {
			t.Errorf("nix_ota_state{state=%q} = %v, want %v", s, got[s], want)
		}
	}
}

// TestPrometheusParserRejectsGoQuoting: the check above can fail. Go's %q,
// which wrote these labels before, makes \x00 or \u2028 escapes that the
// parser refuses, dropping the whole file; and an unescaped line feed
// breaks it too.
func TestPrometheusParserRejectsGoQuoting(t *testing.T) {
	for _, v := range []string{"nul\x00byte", "ünï \u2028", "invalid\xffutf8"} {
		text := fmt.Sprintf("# TYPE nix_ota_info gauge\nnix_ota_info{device=%q} 1\n", v)
		if _, err := parseProm(text); err == nil {
			t.Errorf("Prometheus accepted %q", text)
		}
	}
	if _, err := parseProm("# TYPE nix_ota_info gauge\nnix_ota_info{device=\"a\nb\"} 1\n"); err == nil {
		t.Error("Prometheus accepted an unescaped line feed")
	}
}

// FuzzPrometheus: any device id, version and channel give a textfile that
// Prometheus parses, with the values back as written (as valid UTF-8).
func FuzzPrometheus(f *testing.F) {
	for _, v := range hostileLabels {
		f.Add(v, v, v)
	}
	f.Fuzz(func(t *testing.T, device, version, channel string) {
		st := status.Status{DeviceID: device, AgentVersion: version, Channel: channel, State: status.UpToDate}
		text := prometheus(st)
		fams, err := parseProm(text)
		if err != nil {
			t.Fatalf("%v\n%s", err, text)
		}
		if !utf8.ValidString(text) {
			t.Fatalf("textfile is not valid UTF-8:\n%q", text)
		}
		info := labelsOf(t, fams, "nix_ota_info")
		if info["device"] != strings.ToValidUTF8(device, "\uFFFD") || info["version"] != strings.ToValidUTF8(version, "\uFFFD") ||
			labelsOf(t, fams, "nix_ota_revision")["channel"] != strings.ToValidUTF8(channel, "\uFFFD") {
			t.Fatalf("labels changed: %q from %q %q %q", info, device, version, channel)
		}
	})
}
