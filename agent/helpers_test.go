package agent

import (
	"context"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/channel"
	"github.com/nix-ota/nix-ota/internal/testenv"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/manifest/signing"
)

// channelPublish publishes p signed by every signer, as nix-ota publish does.
func channelPublish(ctx context.Context, st bucket.Store, p *manifest.Payload, signers ...signing.Key) (channel.Result, error) {
	return testenv.PublishSigned(ctx, st, nil, p, signers...)
}
