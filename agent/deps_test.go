package agent_test

import (
	"os/exec"
	"strings"
	"testing"
)

// forbidden keeps the agent small and its attack surface narrow: no cloud
// SDKs or KMS clients (the CLI alone signs), no HTML templating (the CLI
// alone renders the dashboard).
var forbidden = []string{
	"github.com/aws/",
	"github.com/sigstore/sigstore/pkg/signature/kms",
	"cloud.google.com/",
	"github.com/Azure/",
	"github.com/hashicorp/vault",
	"html/template",
	"text/template",
}

func TestAgentDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "../cmd/nix-ota-agent").Output()
	if err != nil {
		t.Fatal(err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("implausibly few dependencies (%d): go list failed?", len(deps))
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if strings.HasPrefix(d, f) {
				t.Errorf("nix-ota-agent depends on %s (forbidden: %s)", d, f)
			}
		}
	}
	// The same check on the linked binary's module list.
	mods, err := exec.Command("go", "version", "-m", agentBin).Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mods), "github.com/minio/minio-go/v7") {
		t.Fatalf("module list of the binary looks wrong:\n%s", mods)
	}
	for _, f := range []string{"github.com/aws/", "cloud.google.com/", "github.com/Azure/", "github.com/hashicorp/vault"} {
		if strings.Contains(string(mods), f) {
			t.Errorf("the agent binary links %s", f)
		}
	}
}

// TestForbiddenCheckCanFail: the same list run against the CLI must find the AWS
// SDK, proving the check can fail.
func TestForbiddenCheckCanFail(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "../cmd/nix-ota").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "github.com/aws/aws-sdk-go-v2") {
		t.Fatal("the CLI does not link the AWS SDK, so the agent check proves nothing")
	}
}
