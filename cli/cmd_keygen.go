package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/manifest/signing"
)

type keygenOptions struct {
	out, name, pwFile string
	encrypt           bool
}

func keygenCmd() *command {
	o := &keygenOptions{}
	return &command{
		name:    "keygen",
		summary: "make a manifest signing key",
		about: `Generates an ed25519 key for signing channel manifests. The private key is
written as PEM with mode 0600 (never overwriting an existing file); with
--encrypt it is encrypted with a password (scrypt + secretbox, sigstore's
format) read from $NIX_OTA_KEY_PASSWORD, --password-file, or the terminal.
The public key is printed on stdout as NAME:BASE64, the form that goes into
every device's configuration (services.nix-ota-agent.publicKeys). NAME is
written into signatures as the keyid; use a new NAME when you rotate keys.`,
		examples: `  nix-ota keygen --out ~/.config/nix-ota/sign.key
  nix-ota keygen --out sign.key --name fleet-2026 --encrypt`,
		flags: o.flags,
		run:   o.run,
	}
}

func (o *keygenOptions) flags(fs *pflag.FlagSet) {
	fs.StringVar(&o.out, "out", "", "where to write the private key (required)")
	fs.StringVar(&o.name, "name", "nix-ota-1", "key name, used as keyid in signatures")
	fs.BoolVar(&o.encrypt, "encrypt", false, "encrypt the private key with a password")
	fs.StringVar(&o.pwFile, "password-file", "", "read the password from this file (with --encrypt)")
}

func (o *keygenOptions) run(ctx context.Context, env *Env, args []string) error {
	if err := noArgs(args); err != nil {
		return err
	}
	if err := required("out", o.out); err != nil {
		return err
	}
	if err := manifest.ValidateName("key", o.name); err != nil {
		return usageError{err}
	}
	if _, err := os.Lstat(o.out); err == nil {
		return fmt.Errorf("%s already exists; refusing to overwrite a key (delete it first if you mean it)", o.out)
	}
	var pw []byte
	if o.encrypt {
		var err error
		if pw, err = readPassword(env, o.pwFile, true); err != nil {
			return err
		}
	}
	pemBytes, pub, err := signing.Generate(o.name, pw)
	if err != nil {
		return err
	}
	if err := writeNewFile(o.out, pemBytes); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, pub.String())
	enc := ""
	if o.encrypt {
		enc = ", encrypted"
	}
	fmt.Fprintf(env.Stderr, "wrote private key %s (mode 0600%s); the line above is the public key for your devices\n", o.out, enc)
	return nil
}

// writeNewFile writes a secret to a file that must not exist yet, mode
// 0600, synced; on any error nothing is left behind.
func writeNewFile(path string, data []byte) error {
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}
