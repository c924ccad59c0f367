package cli

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"
)

type pubkeyOptions struct{ keys keyFlags }

func pubkeyCmd() *command {
	o := &pubkeyOptions{}
	return &command{
		name:    "pubkey",
		summary: "print the public key of a signing key",
		about:   `Prints the public key that belongs to a signing key (a key file, or a KMS key), in the form device configuration takes: NAME:BASE64 for ed25519, NAME:ecdsa-p256:BASE64 for ECDSA.`,
		examples: `  nix-ota pubkey --key ~/.config/nix-ota/sign.key
  nix-ota pubkey --key fleet-kms=awskms:///arn:aws:kms:eu-central-1:123456789012:key/…`,
		flags: func(fs *pflag.FlagSet) { o.keys = addKeyFlags(fs) },
		run:   o.run,
	}
}

func (o *pubkeyOptions) run(ctx context.Context, env *Env, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	signers, err := o.keys.load(ctx, env)
	if err != nil {
		return err
	}
	for _, s := range signers {
		pub, err := s.Public()
		if err != nil {
			return fmt.Errorf("key %s: %w", s.Name, err)
		}
		fmt.Fprintln(env.Stdout, pub.String())
	}
	return nil
}
