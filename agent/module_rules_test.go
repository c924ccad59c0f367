package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/nix-ota/nix-ota/agent"
)

// ruleCase is one value for one agent configuration field, and the check
// of nix/validate.nix (as the NixOS module applies it) that judges it.
type ruleCase struct {
	Field string `json:"field"`
	Check string `json:"check"`
	Value string `json:"value"`
}

// fieldChecks maps agent.Config's JSON fields to the module's rule for
// them. heartbeat is judged against the base config's 60s interval.
var fieldChecks = map[string]string{
	"bucket": "isBucket", "statusBucket": "isWritableBucket",
	"channel": "isName", "deviceId": "isName", "deviceClass": "isName",
	"publicKeys": "isPublicKey", "trustedCacheKeys": "isCacheKey",
	"substituters": "isSubstituter", "allowedSubstituters": "isSubstituter",
	"rebootWindow": "isRebootWindow", "minFreeSpace": "isSize",
	"interval": "isInterval", "healthTimeout": "isTimeout", "jitter": "isDuration",
	"heartbeat": "heartbeat",
}

// Values the module must accept (and so must the agent).
var goodValues = map[string][]string{
	"bucket": {"https://fleet.example.org", "https://ota.example.com/fleet", "http://10.0.0.2:8080/b",
		"s3://fleet?endpoint=minio.example.org:9000", "s3://fleet/pre/fix?endpoint=bucket:9000&scheme=http&region=us-east-1",
		"s3://fleet?endpoint=ACCOUNT.r2.cloudflarestorage.com&region=auto", "file:///var/lib/ota-bucket"},
	"statusBucket": {"s3://fleet?endpoint=ota.example.com", "file:///srv/bucket", "s3://fleet?profile=device"},
	"channel":      {"prod", "edge-2", "a", "Prod.EU_1"},
	"publicKeys": {"fleet-2026:Q0nTDrrjIrCjXbqUAB5nxuq49BhWKrnCthpZgvOs/GU=",
		"fleet-2027:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=", "k:ed25519:Q0nTDrrjIrCjXbqUAB5nxuq49BhWKrnCthpZgvOs/GU="},
	"trustedCacheKeys":    {"fleet-cache-1:ADJWDeXJvaxuuHE8dkfjE+0An0XXIVVUeMYV8tc/rgM=", "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="},
	"substituters":        {"https://fleet.example.org/cache", "file:///srv/cache", "s3://cache?region=eu-west-1&priority=40", "http://10.0.0.2/c?want-mass-query=1"},
	"allowedSubstituters": {"https://fleet.example.org/cache", "s3://fleet-cache"},
	"rebootWindow":        {"02:00-04:00", "23:30-00:30", "3:00-5:00"},
	"minFreeSpace":        {"2G", "500M", "1.5T", "1048576"},
	"interval":            {"60s", "1s", "1h30m", "5m"},
	"healthTimeout":       {"60s", "1ms", "2m"},
	"jitter":              {"15s", "0s", "2h"},
	"heartbeat":           {"15m", "60s", "1h"},
}

// Values the module must refuse (the agent refuses them, or misreads them).
var badValues = map[string][]string{
	"bucket":           {"", "ftp://x", "fleet.example.org", "https://fleet.example.org?x=1", "https://u:p@fleet.example.org", "s3://a", "s3://fleet?endpoint=x&bogus=1", "file://relative", "/srv/bucket"},
	"statusBucket":     {"https://fleet.example.org", "ftp://x", "s3://fleet?scheme=ftp"},
	"channel":          {"", "prod/eu", "../etc", ".hidden", "a b"},
	"deviceClass":      {"rpi 4", "-x"},
	"publicKeys":       {"not-a-key", "k:c2hvcnQ=", "k:rsa:Q0nTDrrjIrCjXbqUAB5nxuq49BhWKrnCthpZgvOs/GU=", "-k:Q0nTDrrjIrCjXbqUAB5nxuq49BhWKrnCthpZgvOs/GU="},
	"trustedCacheKeys": {"nocolon", "name:", ":AAAA", "a b:AAAA"},
	"substituters":     {"not a url", "https://a@b", "https://x?trusted=1", "https://x?priority=1&priority=2", "file://host/x", "ssh://x", ""},
	"rebootWindow":     {"25:00-26:00", "3am-5am", "03:00-03:00", "03:00", "03:0-04:00"},
	"minFreeSpace":     {"1.2.3G", "...", "2g", "-1G", "NaN"},
	"interval":         {"0s", "500ms", "1d", "1 h", "90", "-1s", "1.5h"},
	"healthTimeout":    {"0s", "0ms", "x"},
	"heartbeat":        {"30s", "0s"},
}

// TestModuleRulesMatchAgent evaluates nix/validate.nix with real Nix and
// runs the agent's own configuration check on the same values: every
// value the module accepts, the agent accepts (so a NixOS configuration
// that evaluates never gives a unit that fails on every start). Besides
// the tables above, a few thousand seeded mutations of the good values
// probe the edges. Exempt by design: ECDSA keys, whose curve point only the
// agent checks (at build time, through check-config).
func TestModuleRulesMatchAgent(t *testing.T) {
	var cases []ruleCase
	for field, vals := range goodValues {
		for _, v := range vals {
			cases = append(cases, ruleCase{field, fieldChecks[field], v})
		}
	}
	for field, vals := range badValues {
		for _, v := range vals {
			cases = append(cases, ruleCase{field, fieldChecks[field], v})
		}
	}
	good := len(cases)
	cases = append(cases, mutations(goodValues, 150)...)
	nixOK := evalModuleRules(t, cases)
	accepted, refused := 0, 0
	for i, c := range cases {
		goErr := agentAccepts(c.Field, c.Value)
		switch {
		case nixOK[i] && goErr != nil:
			t.Errorf("%s = %q: the module accepts it (%s), the agent refuses it: %v", c.Field, c.Value, c.Check, goErr)
		case isListed(goodValues, c) && !nixOK[i]:
			t.Errorf("%s = %q: the module refuses a good value (%s)", c.Field, c.Value, c.Check)
		case i < good && isListed(badValues, c) && nixOK[i]:
			t.Errorf("%s = %q: the module accepts a bad value (%s)", c.Field, c.Value, c.Check)
		}
		if nixOK[i] {
			accepted++
		} else {
			refused++
		}
	}
	t.Logf("%d values (%d from the tables): the module accepts %d, refuses %d; the agent accepts every value the module accepts", len(cases), good, accepted, refused)
}

func isListed(table map[string][]string, c ruleCase) bool {
	for _, v := range table[c.Field] {
		if v == c.Value {
			return true
		}
	}
	return false
}

// mutations derives n values per field from the good ones: a character
// deleted, inserted or replaced, with characters URL and key parsers treat
// specially. Seeded, so a failure reproduces.
func mutations(from map[string][]string, n int) []ruleCase {
	const alphabet = "aZ09.-_:/?&=%@#[] \\+~!'()*,;$\t\"é"
	r := rand.New(rand.NewPCG(13, 42))
	var out []ruleCase
	for _, field := range sortedKeys(from) {
		for i := 0; i < n; i++ {
			base := from[field][r.IntN(len(from[field]))]
			pos := r.IntN(len(base) + 1)
			c := string([]rune(alphabet)[r.IntN(len([]rune(alphabet)))])
			var v string
			switch {
			case r.IntN(3) == 0 && pos < len(base):
				v = base[:pos] + base[pos+1:]
			case r.IntN(2) == 0 && pos < len(base):
				v = base[:pos] + c + base[pos+1:]
			default:
				v = base[:pos] + c + base[pos:]
			}
			out = append(out, ruleCase{field, fieldChecks[field], v})
		}
	}
	return out
}

func sortedKeys(m map[string][]string) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// evalModuleRules judges every case with nix/validate.nix in one
// nix-instantiate run.
func evalModuleRules(t *testing.T, cases []ruleCase) []bool {
	t.Helper()
	if _, err := exec.LookPath("nix-instantiate"); err != nil {
		t.Fatalf("nix-instantiate not found: install Nix (./scripts/test-deps.sh, or apt-get install nix-bin): %v", err)
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "cases.json")
	b, _ := json.Marshal(cases)
	if err := os.WriteFile(in, b, 0o644); err != nil {
		t.Fatal(err)
	}
	rules, _ := filepath.Abs("../nix/validate.nix")
	expr := fmt.Sprintf(`let
  v = import %s;
  checks = v // { heartbeat = s: v.isDuration s && v.durationMs s >= 60000; };
in map (c: checks.${c.check} c.value) (builtins.fromJSON (builtins.readFile %s))`, rules, in)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nix-instantiate", "--eval", "--strict", "--json", "--expr", expr).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("nix-instantiate: %v\n%s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	var res []bool
	if err := json.Unmarshal(out, &res); err != nil || len(res) != len(cases) {
		t.Fatalf("nix-instantiate answered %d results for %d cases: %v", len(res), len(cases), err)
	}
	return res
}

// agentAccepts sets one field of a valid configuration and runs the
// agent's own parse and check, as `nix-ota-agent check-config` does; a
// status bucket must also open (what the agent does at start).
func agentAccepts(field, value string) error {
	base := map[string]any{
		"bucket": "https://fleet.example.org", "channel": "prod", "deviceId": "kiosk-1",
		"publicKeys": []string{"fleet-2026:Q0nTDrrjIrCjXbqUAB5nxuq49BhWKrnCthpZgvOs/GU="},
		"interval":   "60s",
	}
	switch field {
	case "publicKeys", "trustedCacheKeys", "substituters", "allowedSubstituters":
		base[field] = []string{value}
	default:
		base[field] = value
	}
	b, _ := json.Marshal(base)
	c, err := agent.ParseConfig(b)
	if err != nil {
		return err
	}
	_, err = c.Prepare()
	return err
}
