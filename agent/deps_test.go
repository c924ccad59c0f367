package agent_test

import (
	"os/exec"
	"strings"
	"testing"
)

// forbidden keeps the agent small, quick to start and narrow in attack
// surface: no cloud SDKs or KMS clients and no sigstore (the CLI alone
// signs), no minio-go (the CLI alone lists and uploads; devices use
// bucket's built-in SigV4 client), no protobuf, no HTML templating (the CLI
// alone renders the dashboard). A timer-driven poll pays for every linked
// package's initialisation, so each of these is CPU on every device, every
// minute (docs/perf.md).
var forbidden = []string{
	"github.com/aws/aws-sdk-go",
	"github.com/aws/smithy-go/", // except the standalone signer below
	"github.com/minio/",
	"github.com/sigstore/",
	"google.golang.org/protobuf",
	"google.golang.org/genproto",
	"github.com/google/go-containerregistry",
	"cloud.google.com/",
	"github.com/Azure/",
	"github.com/hashicorp/vault",
	"html/template",
	"text/template",
	"github.com/prometheus/", // its text parser checks the textfile in tests only
}

// allowed are exceptions to forbidden: AWS's standalone SigV4 signer,
// which depends on the standard library only.
var allowed = []string{"github.com/aws/smithy-go/aws-http-auth/"}

func badDeps(pkg string) ([]string, error) {
	out, err := exec.Command("go", "list", "-deps", pkg).Output()
	if err != nil {
		return nil, err
	}
	var bad []string
	for _, d := range strings.Fields(string(out)) {
		if isForbidden(d + "/") {
			bad = append(bad, d)
		}
	}
	return bad, nil
}

func isForbidden(dep string) bool {
	for _, a := range allowed {
		if strings.HasPrefix(dep, a) {
			return false
		}
	}
	for _, f := range forbidden {
		if strings.HasPrefix(dep, f) {
			return true
		}
	}
	return false
}

func TestAgentDependencies(t *testing.T) {
	bad, err := badDeps("../cmd/nix-ota-agent")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range bad {
		t.Errorf("nix-ota-agent depends on %s", d)
	}
	// The same check on the linked binary's module list.
	mods, err := exec.Command("go", "version", "-m", agentBin).Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mods), "github.com/aws/smithy-go/aws-http-auth") {
		t.Fatalf("module list of the binary looks wrong:\n%s", mods)
	}
	for _, line := range strings.Split(string(mods), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && (f[0] == "dep" || f[0] == "=>") && isForbidden(f[1]+"/") {
			t.Errorf("the agent binary links %s", f[1])
		}
	}
}

// TestForbiddenCheckCanFail: the same check run against the CLI must find
// the AWS SDK, minio-go and sigstore, proving it can fail.
func TestForbiddenCheckCanFail(t *testing.T) {
	bad, err := badDeps("../cmd/nix-ota")
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(bad, " ")
	for _, want := range []string{"github.com/aws/aws-sdk-go-v2", "github.com/minio/minio-go/v7", "github.com/sigstore/sigstore/pkg/signature", "html/template"} {
		if !strings.Contains(all, want) {
			t.Errorf("the CLI does not link %s, so the agent check proves nothing", want)
		}
	}
}
