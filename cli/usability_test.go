package cli_test

// $NIX_OTA_PUBLIC_KEY, shell completion and "did you mean", colour only on
// a terminal, --no-dashboard.

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/status"
)

// TestPublicKeyEnv: $NIX_OTA_PUBLIC_KEY (keys separated by commas or
// spaces) is the default --public-key of the reading commands and extra
// trust for the signing ones, so the dashboard publish writes verifies
// channels signed by other keys of the fleet.
func TestPublicKeyEnv(t *testing.T) {
	f := fixtures(t)["file"](t)
	prodKey, prodPub := keygen(t, "prod-key")
	stagingKey, stagingPub := keygen(t, "staging-key")
	mustRun(t, nil, "publish", "--skip-closure-check", "--bucket", f.url, "--key", prodKey, "--channel", "prod", "--store-path", storePath("a"))
	env := []string{"NIX_OTA_PUBLIC_KEY=" + stagingPub + ", " + prodPub + "\n"}

	mustRun(t, env, "verify", "--bucket", f.url, "--channel", "prod")
	if out := mustRun(t, env, "history", "--bucket", f.url, "--channel", "prod"); !strings.Contains(out, " ok ") {
		t.Errorf("history with $NIX_OTA_PUBLIC_KEY did not verify:\n%s", out)
	}
	r := run(t, []string{"NIX_OTA_PUBLIC_KEY=" + stagingPub}, "verify", "--bucket", f.url, "--channel", "prod")
	oneLineWith(t, "only another key", r, 3, "none of which is trusted")
	r = run(t, []string{"NIX_OTA_PUBLIC_KEY=nonsense"}, "verify", "--bucket", f.url, "--channel", "prod")
	oneLineWith(t, "bad key in the variable", r, 2, "$NIX_OTA_PUBLIC_KEY")

	signature := func() string {
		var d struct {
			Channels []struct{ Name, Signature string }
		}
		if err := json.Unmarshal(getObj(t, f.store, bucket.DashboardJSON), &d); err != nil {
			t.Fatal(err)
		}
		for _, c := range d.Channels {
			if c.Name == "prod" {
				return c.Signature
			}
		}
		return "no prod channel"
	}
	publishStaging := func(env []string) {
		mustRun(t, env, "publish", "--skip-closure-check", "--bucket", f.url, "--key", stagingKey, "--channel", "staging", "--store-path", storePath("b"))
	}
	publishStaging(nil)
	if s := signature(); s == "ok" {
		t.Fatalf("prod verified on a dashboard written without its key: the check below proves nothing")
	}
	publishStaging(env)
	if s := signature(); s != "ok" {
		t.Errorf("dashboard written by publish with $NIX_OTA_PUBLIC_KEY: prod signature %q, want ok", s)
	}
}

func TestUnknownCommandAndFlag(t *testing.T) {
	r := run(t, nil, "pubish")
	oneLineWith(t, "pubish", r, 2, `unknown command "pubish"; did you mean publish?`)
	r = run(t, nil, "pub")
	oneLineWith(t, "pub", r, 2, "did you mean pubkey or publish?")
	r = run(t, nil, "frobnicate")
	oneLineWith(t, "frobnicate", r, 2, `unknown command "frobnicate" (see nix-ota --help)`)
	r = run(t, nil, "publish", "--chanel", "prod")
	oneLineWith(t, "--chanel", r, 2, "unknown flag: --chanel; did you mean --channel?")
}

// TestCompletion loads the bash script into a real bash and completes
// command lines with it; the zsh and fish scripts carry every command and
// flag.
func TestCompletion(t *testing.T) {
	script := `source <(nix-ota completion bash) && complete -p nix-ota
comp() { COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=(); _nix_ota; echo "$*: ${COMPREPLY[*]}"; }
comp nix-ota pu
comp nix-ota publish --no
comp nix-ota publish --switch b
comp nix-ota completion z
comp nix-ota rollout --max
comp nix-ota help rollb`
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(nixOta)+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	for _, want := range []string{
		"complete -F _nix_ota nix-ota\n",
		"nix-ota pu: pubkey push publish\n",
		"nix-ota publish --no: --no-dashboard --no-delta\n",
		"nix-ota publish --switch b: boot\n",
		"nix-ota completion z: zsh\n",
		"nix-ota rollout --max: --max-failed\n",
		"nix-ota help rollb: rollback\n",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("bash completion lacks %q:\n%s", want, out)
		}
	}
	zsh, fish := mustRun(t, nil, "completion", "zsh"), mustRun(t, nil, "completion", "fish")
	for _, want := range []string{"#compdef nix-ota", "'publish:sign and publish a system to a channel'", "'*--key=[signing key]:key:_files'", "'--switch=[switch mode]:switch:(switch boot)'"} {
		if !strings.Contains(zsh, want) {
			t.Errorf("zsh completion lacks %q", want)
		}
	}
	for _, want := range []string{"-a publish -d 'sign and publish a system to a channel'", "'__fish_seen_subcommand_from rollout' -l max-failed -x", "-l key -r -F"} {
		if !strings.Contains(fish, want) {
			t.Errorf("fish completion lacks %q", want)
		}
	}
	oneLineWith(t, "no shell", run(t, nil, "completion"), 2, "want one shell")
}

// TestColourOnlyOnATerminal: doctor's verdicts are coloured on a
// terminal (a real pseudo-terminal here), never in a pipe or with
// $NO_COLOR.
func TestColourOnlyOnATerminal(t *testing.T) {
	f := fixtures(t)["file"](t)
	key, pub := keygen(t, "fleet-1")
	mustRun(t, nil, "publish", "--skip-closure-check", "--bucket", f.url, "--key", key, "--channel", "prod", "--store-path", storePath("a"), "--expires", "48h")
	for _, args := range [][]string{{"doctor", "--public-key", pub}, {"status"}, {"history", "--channel", "prod"}} {
		r := run(t, nil, append(args, "--bucket", f.url)...)
		if strings.Contains(r.stdout+r.stderr, "\x1b") {
			t.Errorf("%s in a pipe printed an escape sequence:\n%q", args[0], r.stdout)
		}
	}
	tty := onTerminal(t, nil, "doctor", "--bucket", f.url, "--public-key", pub)
	if !strings.Contains(tty, "\x1b[32mok\x1b[0m") || !strings.Contains(tty, "\x1b[33mWARN\x1b[0m") {
		t.Errorf("doctor on a terminal is not coloured:\n%q", tty)
	}
	if tty := onTerminal(t, []string{"NO_COLOR=1"}, "doctor", "--bucket", f.url, "--public-key", pub); strings.Contains(tty, "\x1b") {
		t.Errorf("doctor with NO_COLOR is coloured:\n%q", tty)
	}
	// status: a failed device's state in red, a device's own escape
	// sequences still stripped.
	writeStatus(t, f.store, status.Status{DeviceID: "kiosk-9", Channel: "prod", State: status.Failed, LastError: "boom\x1b[32mGREEN"})
	tty = onTerminal(t, nil, "status", "--bucket", f.url)
	if !strings.Contains(tty, "\x1b[31mfailed\x1b[0m") || strings.Contains(tty, "\x1b[32m") {
		t.Errorf("status on a terminal:\n%q", tty)
	}
	if r := run(t, nil, "status", "--bucket", f.url); strings.Contains(r.stdout, "\x1b") || !strings.Contains(r.stdout, "failed") {
		t.Errorf("status in a pipe:\n%q", r.stdout)
	}
}

// onTerminal runs nix-ota with stdout on a new pseudo-terminal and returns
// what it printed there.
func onTerminal(t *testing.T, env []string, args ...string) string {
	t.Helper()
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ptm.Close()
	if err := unix.IoctlSetPointerInt(int(ptm.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptm.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nixOta, args...)
	cmd.Env = append(append(os.Environ(), "NO_COLOR=", "NIX_OTA_BUCKET="), env...)
	cmd.Stdout = pts
	if err := cmd.Run(); err != nil {
		t.Logf("nix-ota %v: %v", args, err)
	}
	pts.Close()
	var out []byte
	buf := make([]byte, 4096)
	ptm.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		k, err := ptm.Read(buf)
		out = append(out, buf[:k]...)
		if err != nil {
			break
		}
	}
	return string(out)
}

// TestNoDashboard: every command that writes the dashboard leaves it alone
// with --no-dashboard.
func TestNoDashboard(t *testing.T) {
	f := fixtures(t)["file"](t)
	key, _ := keygen(t, "fleet-1")
	dash := filepath.Join(strings.TrimPrefix(f.url, "file://"), bucket.DashboardKey)
	sign := func(args ...string) {
		t.Helper()
		mustRun(t, nil, append(args, "--bucket", f.url, "--key", key, "--channel", "prod", "--no-dashboard")...)
		if _, err := os.Stat(dash); err == nil {
			t.Fatalf("%s --no-dashboard wrote %s", args[0], bucket.DashboardKey)
		}
	}
	sign("publish", "--skip-closure-check", "--store-path", storePath("a"))
	sign("publish", "--skip-closure-check", "--store-path", storePath("b"), "--rollout", "5")
	sign("rollout", "--steps", "5,100", "--wait", "1s", "--interval", "100ms", "--allow-empty")
	sign("rollback", "--to", "1")
	sign("resign")
	mustRun(t, nil, "resign", "--bucket", f.url, "--key", key, "--channel", "prod")
	if _, err := os.Stat(dash); err != nil {
		t.Fatalf("resign without --no-dashboard wrote no dashboard: %v", err)
	}
}
