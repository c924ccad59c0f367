package agent_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/nix-ota/nix-ota/agent"
)

// configKeys are the JSON names of agent.Config's fields.
func configKeys() []string {
	var keys []string
	t := reflect.TypeOf(agent.Config{})
	for i := 0; i < t.NumField(); i++ {
		keys = append(keys, strings.Split(t.Field(i).Tag.Get("json"), ",")[0])
	}
	sort.Strings(keys)
	return keys
}

// moduleKeys are the attributes nix/module.nix writes into the agent's
// JSON configuration (between its agent-config markers).
func moduleKeys(t *testing.T) []string {
	src, err := os.ReadFile("../nix/module.nix")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile(`(?s)# agent-config-begin(.*)# agent-config-end`).FindSubmatch(src)
	if block == nil {
		t.Fatal("nix/module.nix lacks the agent-config markers")
	}
	var keys []string
	for _, m := range regexp.MustCompile(`(?m)^\s{4}(\w+) = `).FindAllSubmatch(block[1], -1) {
		keys = append(keys, string(m[1]))
	}
	sort.Strings(keys)
	return keys
}

// TestModuleConfigMatchesAgent: the NixOS module, the shared example and
// the Go struct agree on every field, and the example is a valid config.
func TestModuleConfigMatchesAgent(t *testing.T) {
	want := configKeys()
	if got := moduleKeys(t); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("module writes %v\nagent reads   %v", got, want)
	}
	b, err := os.ReadFile("../examples/agent-config.json")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var got []string
	for k := range m {
		got = append(got, k)
	}
	sort.Strings(got)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("examples/agent-config.json has %v\nagent reads %v", got, want)
	}
	c, err := agent.ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Prepare(); err != nil {
		t.Fatalf("the shared example is not a valid config: %v", err)
	}
	out, err := exec.Command(agentBin, "check-config", "../examples/agent-config.json").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("ok:")) {
		t.Fatalf("check-config of the example: %v\n%s", err, out)
	}
	// The same file with one field broken is refused with a clear error.
	bad := bytes.Replace(b, []byte(`"rebootWindow": "02:00-04:00"`), []byte(`"rebootWindow": "2am-4am"`), 1)
	p := t.TempDir() + "/bad.json"
	os.WriteFile(p, bad, 0o644)
	out, err = exec.Command(agentBin, "check-config", p).CombinedOutput()
	if err == nil || !bytes.Contains(out, []byte("rebootWindow")) {
		t.Fatalf("check-config accepted a bad reboot window: %s", out)
	}
}

// TestAllowedSubstitutersCheck: each allowedSubstituters prefix must pass
// the same policy as a manifest's substituters, so a pin cannot widen it.
func TestAllowedSubstitutersCheck(t *testing.T) {
	base := `{"bucket":"https://fleet.example.org","channel":"prod","deviceId":"kiosk-1",` +
		`"publicKeys":["fleet-2026:Q0nTDrrjIrCjXbqUAB5nxuq49BhWKrnCthpZgvOs/GU="],"allowedSubstituters":%s}`
	for in, ok := range map[string]bool{
		`[]`:                                  true,
		`["https://fleet.example.org/cache"]`: true,
		`["s3://fleet-cache?region=eu-west-1","file:///srv"]`: true,
		`["https://user:pw@cache.example.org"]`:               false,
		`["ftp://cache.example.org"]`:                         false,
		`["https://cache.example.org?trusted=1"]`:             false,
		`[""]`: false,
	} {
		c, err := agent.ParseConfig([]byte(fmt.Sprintf(base, in)))
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		_, err = c.Prepare()
		if (err == nil) != ok || (err != nil && !strings.Contains(err.Error(), "allowedSubstituters")) {
			t.Errorf("allowedSubstituters %s: %v (want ok=%v)", in, err, ok)
		}
	}
}

// TestModuleDocsCurrent: docs/module.md was rendered (scripts/module-docs.sh)
// from the current nix/module.nix and nix/validate.nix, and documents
// exactly the options the module declares. Rendering needs nixpkgs' lib;
// this check does not, so it runs wherever the tests run.
func TestModuleDocsCurrent(t *testing.T) {
	module, err := os.ReadFile("../nix/module.nix")
	if err != nil {
		t.Fatal(err)
	}
	rules, err := os.ReadFile("../nix/validate.nix")
	if err != nil {
		t.Fatal(err)
	}
	docs, err := os.ReadFile("../docs/module.md")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(append(append([]byte{}, module...), rules...))
	if want := "(sha256 " + hex.EncodeToString(sum[:]) + ")"; !bytes.Contains(docs, []byte(want)) {
		t.Fatalf("docs/module.md is stale: nix/module.nix or nix/validate.nix changed since it was rendered; run scripts/module-docs.sh (needs nixpkgs' lib: NIXPKGS_LIB=/path/to/nixpkgs/lib, or nix develop)")
	}
	var declared, documented []string
	for _, m := range regexp.MustCompile(`(?m)^    (\w+) = (mkOption|mkEnableOption)\b`).FindAllSubmatch(module, -1) {
		declared = append(declared, string(m[1]))
	}
	for _, m := range regexp.MustCompile("(?m)^## `services\\.nix-ota-agent\\.(\\w+)`$").FindAllSubmatch(docs, -1) {
		documented = append(documented, string(m[1]))
	}
	sort.Strings(declared)
	sort.Strings(documented)
	if len(declared) < 20 || strings.Join(declared, " ") != strings.Join(documented, " ") {
		t.Fatalf("nix/module.nix declares %v\ndocs/module.md documents %v", declared, documented)
	}
}

// TestPackageSourceHasEmbeds: every file a //go:embed directive names is in
// nix/package.nix's source fileset (between its go-embed markers);
// otherwise the Nix build fails with "pattern …: no matching files found".
func TestPackageSourceHasEmbeds(t *testing.T) {
	pkg, err := os.ReadFile("../nix/package.nix")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile(`(?s)# go-embed-begin(.*)# go-embed-end`).FindSubmatch(pkg)
	if block == nil {
		t.Fatal("nix/package.nix lacks the go-embed markers")
	}
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile(`\.\./(\S+)`).FindAllSubmatch(block[1], -1) {
		listed[string(m[1])] = true
	}
	embedded := 0
	err = filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range regexp.MustCompile(`(?m)^//go:embed (.+)$`).FindAllSubmatch(src, -1) {
			for _, pat := range strings.Fields(string(m[1])) {
				files, _ := filepath.Glob(filepath.Join(filepath.Dir(path), pat))
				if len(files) == 0 {
					t.Errorf("%s: //go:embed %s matches nothing", path, pat)
				}
				for _, f := range files {
					rel, _ := filepath.Rel("..", f)
					embedded++
					if !listed[filepath.ToSlash(rel)] {
						t.Errorf("%s embeds %s, which nix/package.nix's source does not include (add ../%s between its go-embed markers)", path, rel, rel)
					}
				}
			}
		}
		return nil
	})
	if err != nil || embedded == 0 {
		t.Fatalf("walk: %v, %d embedded files found", err, embedded)
	}
}
