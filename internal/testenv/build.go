package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// AgentTags are the build tags the agent ships with (Makefile and
// nix/package.nix say the same): nethttpomithttp2 leaves HTTP/2 out of
// net/http. One small GET per poll gains nothing from it, and without it
// the binary is smaller and each timer-driven start touches fewer pages
// (docs/perf.md).
const AgentTags = "nethttpomithttp2"

// BuildAgent builds nix-ota-agent as shipped (static, stripped, AgentTags)
// into out.
func BuildAgent(out string) error {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	cmd := exec.Command("go", "build", "-trimpath", "-tags", AgentTags, "-ldflags", "-s -w", "-o", out, "./cmd/nix-ota-agent")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build nix-ota-agent: %v\n%s", err, b)
	}
	return nil
}
