package cli_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/manifest"
)

// action is the part of action.yml a runner reads.
type action struct {
	Inputs map[string]struct {
		Required bool
		Default  string
	}
	Runs struct {
		Using string
		Steps []struct {
			ID    string
			Shell string
			Env   map[string]string
			Run   string
		}
	}
}

var expr = regexp.MustCompile(`\$\{\{\s*([a-z]+)\.([a-zA-Z0-9_-]+)\s*\}\}`)

// runAction runs the composite action's steps the way a GitHub runner
// does: ${{ inputs.* }} and ${{ github.action_path }} substituted, each
// step's env set, `run` executed with bash, $GITHUB_OUTPUT collected.
func runAction(t *testing.T, env []string, with map[string]string) (code int, out, outputs string) {
	t.Helper()
	root := testenv.RepoRoot()
	b, err := os.ReadFile(filepath.Join(root, "action.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var a action
	if err := yaml.Unmarshal(b, &a); err != nil {
		t.Fatal(err)
	}
	if a.Runs.Using != "composite" || len(a.Runs.Steps) == 0 {
		t.Fatalf("action.yml: %+v", a.Runs)
	}
	inputs := map[string]string{}
	for name, in := range a.Inputs {
		inputs[name] = in.Default
	}
	for k, v := range with {
		if _, ok := a.Inputs[k]; !ok {
			t.Fatalf("action.yml has no input %q", k)
		}
		inputs[k] = v
	}
	ghOut := filepath.Join(t.TempDir(), "github-output")
	os.WriteFile(ghOut, nil, 0o644)
	var all strings.Builder
	for _, step := range a.Runs.Steps {
		if step.Shell != "bash" {
			t.Fatalf("step %s: shell %q", step.ID, step.Shell)
		}
		sub := func(s string) string {
			return expr.ReplaceAllStringFunc(s, func(m string) string {
				p := expr.FindStringSubmatch(m)
				switch p[1] {
				case "inputs":
					return inputs[p[2]]
				case "github":
					if p[2] == "action_path" {
						return root
					}
				}
				t.Fatalf("unhandled expression %s", m)
				return ""
			})
		}
		cmd := exec.Command("bash", "-e", "-c", sub(step.Run))
		cmd.Env = append(append(os.Environ(), "GITHUB_OUTPUT="+ghOut, "AWS_EC2_METADATA_DISABLED=true"), env...)
		for k, v := range step.Env {
			cmd.Env = append(cmd.Env, k+"="+sub(v))
		}
		o, err := cmd.CombinedOutput()
		all.Write(o)
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	gh, _ := os.ReadFile(ghOut)
	return code, all.String(), string(gh)
}

// TestGitHubAction runs the action's shell steps against MinIO with the
// inputs a workflow passes: the key as a PEM secret, two substituters, a
// mixed-fleet store path list, then a bad key.
func TestGitHubAction(t *testing.T) {
	f := fixtures(t)["minio"](t)
	keyFile, pub := keygen(t, "ci-key")
	pem, _ := os.ReadFile(keyFile)
	with := map[string]string{
		"bucket":      f.url,
		"channel":     "prod",
		"store-path":  "rpi4=" + storePath("pi") + "\nx86=" + storePath("pc") + "\n",
		"key":         string(pem),
		"substituter": "https://fleet.example.org/cache\nhttps://mirror.example.org/cache",
		"message":     "ci build 42",
		"rollout":     "25",
		"nix-ota":     nixOta,
		// example.org is not reachable from tests; the check itself is
		// covered by TestClosureCheck.
		"skip-closure-check": "true",
	}
	code, out, outputs := runAction(t, f.env, with)
	if code != 0 || strings.TrimSpace(outputs) != "revision=1" {
		t.Fatalf("action: exit %d, outputs %q\n%s", code, outputs, out)
	}
	v, err := manifest.CheckSigned(mustTrust(t, pub), "prod", getObj(t, f.store, "channels/prod.json"))
	if err != nil {
		t.Fatal(err)
	}
	p := v.Payload
	if p.Systems["rpi4"] != storePath("pi") || p.Systems["x86"] != storePath("pc") || len(p.Substituters) != 2 || p.Rollout.Percent != 25 || p.Message != "ci build 42" {
		t.Fatalf("published payload: %+v", p)
	}
	// The key as a file path works too, and the revision advances.
	with["key"] = keyFile
	if code, out, outputs := runAction(t, f.env, with); code != 0 || strings.TrimSpace(outputs) != "revision=2" {
		t.Fatalf("key file: exit %d %q\n%s", code, outputs, out)
	}
	// A key that is neither: clear error, nothing published.
	with["key"] = "not-a-key"
	code, out, _ = runAction(t, f.env, with)
	if code == 0 || !strings.Contains(out, "neither a PEM key nor an existing key file") {
		t.Fatalf("bad key: exit %d\n%s", code, out)
	}
	if v, _ := manifest.CheckSigned(mustTrust(t, pub), "prod", getObj(t, f.store, "channels/prod.json")); v.Payload.Revision != 2 {
		t.Fatal("a failed action changed the channel")
	}
	// wait with no device reporting: the job fails, and still says which
	// revision it published.
	with["key"], with["wait"] = keyFile, "2s"
	code, out, outputs = runAction(t, f.env, with)
	if code == 0 || strings.TrimSpace(outputs) != "revision=3" || !strings.Contains(out, "only 0 cohort device(s) reported done") {
		t.Fatalf("wait with nobody reporting: exit %d, outputs %q\n%s", code, outputs, out)
	}
	with["allow-empty"] = "true"
	if code, out, outputs := runAction(t, f.env, with); code != 0 || strings.TrimSpace(outputs) != "revision=4" {
		t.Fatalf("wait with allow-empty: exit %d %q\n%s", code, outputs, out)
	}
}
