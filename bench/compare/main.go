// Command compare measures an idle poll (nothing changed) of nix-ota-agent
// side by side with what users would run instead, in one run on one
// machine, each through a counting loopback proxy:
//
//   - nix-ota-agent once, polling s3:// (signed) and http:// (anonymous)
//   - git fetch of an unchanged repository from a local git daemon (how
//     comin polls)
//   - aws s3api head-object against the same MinIO (how npcnix polls)
//   - curl with a conditional GET (a floor for any HTTP client)
//
// It prints min/median/max over -runs whole-process runs (CPU is the
// process's user+system time including the children it waited for) and
// the ratios of the medians, and records them in bench/results.json.
//
//	go run ./bench/compare [-runs 20]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/internal/benchutil"
	"github.com/nix-ota/nix-ota/internal/testenv"
)

func main() {
	runs := flag.Int("runs", 20, "whole-process runs per tool")
	flag.Parse()
	log.SetFlags(0)
	if err := run(*runs); err != nil {
		log.Fatalf("bench/compare: %v", err)
	}
}

type sample struct{ cpuUs, wallUs, faults, reqs, conns, bytes int64 }

// tool is one way of asking "did anything change?".
type tool struct {
	name  string
	px    *benchutil.Proxy
	cmd   func() *exec.Cmd
	reqsH bool // the proxy speaks HTTP: count requests
}

// rssRuns is how many runs per tool measure peak RSS (under GNU time);
// RSS barely varies between runs.
const rssRuns = 3

func measure(t tool, runs int) ([]sample, error) {
	var out []sample
	for i := 0; i < runs+1; i++ { // the first run warms caches and is dropped
		if t.px != nil {
			t.px.Reset()
		}
		cmd := t.cmd()
		var stderr strings.Builder
		cmd.Stderr = &stderr
		start := time.Now()
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("%s: %v: %s", t.name, err, stderr.String())
		}
		wall := time.Since(start)
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		time.Sleep(20 * time.Millisecond)
		if i == 0 {
			continue
		}
		s := sample{
			cpuUs:  (ru.Utime.Nano() + ru.Stime.Nano()) / 1000,
			wallUs: wall.Microseconds(),
			faults: ru.Minflt + ru.Majflt,
		}
		if t.px != nil {
			s.reqs, s.conns, s.bytes = t.px.Requests.Load(), t.px.Conns.Load(), t.px.Up.Load()+t.px.Down.Load()
		}
		out = append(out, s)
	}
	return out, nil
}

// peakRSS measures peak RSS in a separate pass under GNU time (see
// benchutil.WrapTime: a child of this Go process would report this
// process's RSS as its own).
func peakRSS(t tool) ([]int64, error) {
	var out []int64
	for range rssRuns {
		rss, err := benchutil.PeakRSS(t.cmd())
		if err != nil {
			return nil, fmt.Errorf("%s: %v", t.name, err)
		}
		out = append(out, rss)
	}
	return out, nil
}

func run(runs int) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "nix-ota-bench-compare-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for _, bin := range []string{"git", "aws", "curl"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s is needed for the comparison (make bench installs it): %v", bin, err)
		}
	}
	agentBin := filepath.Join(dir, "nix-ota-agent")
	if err := testenv.BuildAgent(agentBin); err != nil {
		return err
	}

	// One MinIO, one published channel, anonymous read on channels/.
	m, err := benchutil.StartMinIOBucket(ctx, "fleet")
	if err != nil {
		return err
	}
	defer m.Stop()
	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["*"]},"Action":["s3:GetObject"],"Resource":["arn:aws:s3:::fleet/channels/*"]}]}`
	if err := m.Admin().SetBucketPolicy(ctx, "fleet", policy); err != nil {
		return err
	}
	s3px, s3url, store, err := benchutil.ProxiedBucket(ctx, m)
	if err != nil {
		return err
	}
	sys, err := benchutil.BuildSystem("compare")
	if err != nil {
		return err
	}
	pub, _, err := benchutil.PublishChannel(ctx, store, sys)
	if err != nil {
		return err
	}
	profile := filepath.Join(dir, "profile")
	os.Symlink(sys, profile)
	creds := filepath.Join(dir, "creds")
	os.WriteFile(creds, []byte(fmt.Sprintf("[default]\naws_access_key_id=%s\naws_secret_access_key=%s\n", m.AccessKey, m.SecretKey)), 0o600)
	agentCmd := func(bucketURL, stateDir string) func() *exec.Cmd {
		return func() *exec.Cmd {
			return exec.Command(agentBin, "once", "--bucket", bucketURL, "--channel", "prod", "--public-key", pub.String(), "--device-id", "bench-1",
				"--state-dir", stateDir, "--profile", profile, "--status-credentials", creds, "--switch-via", "direct",
				"--status-bucket", fmt.Sprintf("s3://fleet?endpoint=%s&scheme=http", m.Endpoint))
		}
	}
	httpURL := fmt.Sprintf("http://%s/fleet", s3px.Addr())

	// A git repository served by git daemon on loopback, and a clone.
	repo := filepath.Join(dir, "git", "fleet.git")
	work := filepath.Join(dir, "clone")
	gitPort, _ := testenv.FreePort()
	for _, args := range [][]string{
		{"init", "-q", "--bare", repo},
		{"-C", repo, "config", "daemon.uploadpack", "true"},
	} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("git %v: %v %s", args, err, out)
		}
	}
	seed := filepath.Join(dir, "seed")
	sh := func(script string) error {
		out, err := exec.Command("sh", "-c", script).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s: %v %s", script, err, out)
		}
		return nil
	}
	if err := sh(fmt.Sprintf(`set -e; git init -q %[1]s; cd %[1]s; echo '{"system":"%[2]s"}' > system.json; git add .; git -c user.email=b@b -c user.name=b commit -qm seed; git push -q %[3]s HEAD:refs/heads/main`, seed, sys, repo)); err != nil {
		return err
	}
	daemon := exec.Command("git", "daemon", "--reuseaddr", "--listen=127.0.0.1", fmt.Sprintf("--port=%d", gitPort), "--base-path="+filepath.Dir(repo), "--export-all", filepath.Dir(repo))
	daemon.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := daemon.Start(); err != nil {
		return err
	}
	defer daemon.Process.Kill()
	time.Sleep(500 * time.Millisecond)
	gitpx, err := benchutil.StartProxy(fmt.Sprintf("127.0.0.1:%d", gitPort))
	if err != nil {
		return err
	}
	if err := sh(fmt.Sprintf("git clone -q git://%s/fleet.git %s", gitpx.Addr(), work)); err != nil {
		return err
	}

	// curl's ETag for the conditional GET.
	o, err := store.Get(ctx, "channels/prod.json", bucket.GetOptions{})
	if err != nil {
		return err
	}
	awsEnv := append(os.Environ(), m.Env()...)
	awsEnv = append(awsEnv, "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_PAGER=")

	// Prime both agents (first poll: verify, status write), then measure idle.
	s3state, httpState := filepath.Join(dir, "st-s3"), filepath.Join(dir, "st-http")
	for _, c := range []*exec.Cmd{agentCmd(s3url, s3state)(), agentCmd(httpURL, httpState)()} {
		if out, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("prime agent: %v %s", err, out)
		}
	}
	tools := []tool{
		{name: "nix-ota-agent once (s3://, signed)", px: s3px, reqsH: true, cmd: agentCmd(s3url, s3state)},
		{name: "nix-ota-agent once (http://, anonymous)", px: s3px, reqsH: true, cmd: agentCmd(httpURL, httpState)},
		{name: "nix-ota-agent once (http://, as the module runs it)", px: s3px, reqsH: true, cmd: func() *exec.Cmd {
			c := agentCmd(httpURL, httpState)()
			c.Env = append(os.Environ(), "GOMAXPROCS=1") // the NixOS module's environment
			return c
		}},
		{name: "git fetch (unchanged, git://)", px: gitpx, cmd: func() *exec.Cmd {
			return exec.Command("git", "-C", work, "fetch", "-q", "origin")
		}},
		{name: "aws s3api head-object", px: s3px, reqsH: true, cmd: func() *exec.Cmd {
			c := exec.Command("aws", "s3api", "head-object", "--bucket", "fleet", "--key", "channels/prod.json", "--endpoint-url", "http://"+s3px.Addr(), "--region", "us-east-1")
			c.Env = awsEnv
			c.Stdout = nil
			return c
		}},
		{name: "curl conditional GET (304)", px: s3px, reqsH: true, cmd: func() *exec.Cmd {
			return exec.Command("curl", "-s", "-o", "/dev/null", "-H", `If-None-Match: "`+o.ETag+`"`, httpURL+"/channels/prod.json")
		}},
	}
	floors, err := floorTools(dir)
	if err != nil {
		return err
	}
	tools = append(tools, floors...)
	results := map[string]any{}
	fmt.Printf("idle poll, nothing changed: %d whole-process runs each, min / median / max\n\n", runs)
	fmt.Printf("%-52s %20s %20s %16s %8s %10s %12s\n", "tool", "CPU ms", "wall ms", "peak RSS MiB", "faults", "requests", "bytes")
	medCPU := map[string]int64{}
	for _, t := range tools {
		ss, err := measure(t, runs)
		if err != nil {
			return err
		}
		pick := func(f func(sample) int64) (int64, int64, int64) { return benchutil.Column(ss, f) }
		c1, c2, c3 := pick(func(s sample) int64 { return s.cpuUs })
		w1, w2, w3 := pick(func(s sample) int64 { return s.wallUs })
		rss, err := peakRSS(t)
		if err != nil {
			return err
		}
		r1, r2, r3 := benchutil.MinMedMax(rss)
		_, q, _ := pick(func(s sample) int64 {
			if t.reqsH {
				return s.reqs
			}
			return s.conns
		})
		_, b, _ := pick(func(s sample) int64 { return s.bytes })
		_, pf, _ := pick(func(s sample) int64 { return s.faults })
		reqs := fmt.Sprint(q)
		if !t.reqsH {
			reqs += " conn"
		}
		if t.px == nil {
			reqs = "-"
		}
		fmt.Printf("%-52s %6.1f/%6.1f/%6.1f %6.1f/%6.1f/%6.1f %5.0f/%4.0f/%4.0f %8d %10s %12d\n", t.name,
			float64(c1)/1000, float64(c2)/1000, float64(c3)/1000, float64(w1)/1000, float64(w2)/1000, float64(w3)/1000,
			float64(r1)/1024, float64(r2)/1024, float64(r3)/1024, pf, reqs, b)
		medCPU[t.name] = c2
		results[t.name] = map[string]any{"cpu_ms": []float64{float64(c1) / 1000, float64(c2) / 1000, float64(c3) / 1000},
			"wall_ms":      []float64{float64(w1) / 1000, float64(w2) / 1000, float64(w3) / 1000},
			"peak_rss_kib": []int64{r1, r2, r3}, "page_faults_median": pf, "requests": q, "bytes": b}
	}
	ours, module := medCPU[tools[1].name], medCPU[tools[2].name]
	fmt.Printf("\nfloors (no network): what any process, any Go program, and the agent's linked packages cost before doing anything\n")
	for _, f := range floors {
		fmt.Printf("  aws s3api / %-58s %5.0fx\n", f.name, float64(medCPU[tools[4].name])/float64(medCPU[f.name]))
	}
	aws, git, curl := float64(medCPU[tools[4].name]), float64(medCPU[tools[3].name]), float64(medCPU[tools[5].name])
	fmt.Printf("\nratios of median CPU (whole process):\n")
	fmt.Printf("  aws s3api / nix-ota: http %.0fx, s3 %.0fx, as the module runs it %.0fx\n", aws/float64(ours), aws/float64(medCPU[tools[0].name]), aws/float64(module))
	fmt.Printf("  git fetch / nix-ota: http %.2fx, as the module runs it %.2fx\n", git/float64(ours), git/float64(module))
	fmt.Printf("  curl / nix-ota: http %.2fx, as the module runs it %.2fx\n", curl/float64(ours), curl/float64(module))
	results["ratios"] = map[string]float64{
		"aws_over_nixota_http": aws / float64(ours), "aws_over_nixota_s3": aws / float64(medCPU[tools[0].name]),
		"aws_over_nixota_module": aws / float64(module), "git_over_nixota_http": git / float64(ours),
		"git_over_nixota_module": git / float64(module),
		"aws_over_floor_exec":    aws / float64(medCPU[floors[0].name]), "aws_over_floor_empty_go": aws / float64(medCPU[floors[1].name]),
		"aws_over_floor_agent_packages": aws / float64(medCPU[floors[2].name]),
	}
	return benchutil.SaveResult("idle_poll_comparison", results)
}

// floorTools are processes that do no polling at all, to show what starting
// a process costs on this machine: exec alone, an empty Go program, and a
// Go program that links and initialises every package the agent links,
// then returns (all built as the agent is: static, stripped,
// GOMAXPROCS=1).
func floorTools(dir string) ([]tool, error) {
	build := func(name, src string) (string, error) {
		file := filepath.Join(dir, name+".go")
		if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
			return "", err
		}
		bin := filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-trimpath", "-tags", testenv.AgentTags, "-ldflags", "-s -w", "-o", bin, file)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("build %s: %v\n%s", name, err, out)
		}
		return bin, nil
	}
	empty, err := build("floor-empty", "package main\n\nfunc main() {}\n")
	if err != nil {
		return nil, err
	}
	linked, err := build("floor-agent-packages", "package main\n\nimport _ \"github.com/nix-ota/nix-ota/agent\"\n\nfunc main() {}\n")
	if err != nil {
		return nil, err
	}
	run := func(bin string) func() *exec.Cmd {
		return func() *exec.Cmd {
			c := exec.Command(bin)
			c.Env = append(os.Environ(), "GOMAXPROCS=1")
			return c
		}
	}
	return []tool{
		{name: "floor: /bin/true (exec alone)", cmd: run("/bin/true")},
		{name: "floor: empty Go program", cmd: run(empty)},
		{name: "floor: the agent's packages initialised, main returns", cmd: run(linked)},
	}, nil
}
