package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/manifest/signing"
)

// passwordEnv names the environment variable holding a key's password, for
// CI jobs that keep the key encrypted at rest.
const passwordEnv = "NIX_OTA_KEY_PASSWORD"

func keygenCmd() *command {
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
		flags: func(fs *pflag.FlagSet) func(context.Context, *Env, []string) error {
			out := fs.String("out", "", "where to write the private key (required)")
			name := fs.String("name", "nix-ota-1", "key name, used as keyid in signatures")
			encrypt := fs.Bool("encrypt", false, "encrypt the private key with a password")
			pwFile := fs.String("password-file", "", "read the password from this file (with --encrypt)")
			return func(ctx context.Context, env *Env, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				if err := required("out", *out); err != nil {
					return err
				}
				if err := manifest.ValidateName("key", *name); err != nil {
					return usageError{err}
				}
				if _, err := os.Lstat(*out); err == nil {
					return fmt.Errorf("%s already exists; refusing to overwrite a key (delete it first if you mean it)", *out)
				}
				var pw []byte
				if *encrypt {
					var err error
					if pw, err = readPassword(env, *pwFile, true); err != nil {
						return err
					}
				}
				pemBytes, pub, err := signing.Generate(*name, pw)
				if err != nil {
					return err
				}
				if dir := filepath.Dir(*out); dir != "." {
					if err := os.MkdirAll(dir, 0o700); err != nil {
						return err
					}
				}
				f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
				if err != nil {
					return err
				}
				if _, err := f.Write(pemBytes); err != nil {
					f.Close()
					os.Remove(*out)
					return err
				}
				if err := f.Sync(); err != nil {
					f.Close()
					os.Remove(*out)
					return err
				}
				if err := f.Close(); err != nil {
					return err
				}
				fmt.Fprintln(env.Stdout, pub.String())
				fmt.Fprintf(env.Stderr, "wrote private key %s (mode 0600%s); the line above is the public key for your devices\n", *out, map[bool]string{true: ", encrypted", false: ""}[*encrypt])
				return nil
			}
		},
	}
}

func pubkeyCmd() *command {
	return &command{
		name:    "pubkey",
		summary: "print the public key of a signing key",
		about:   `Prints the public key that belongs to a signing key (a key file, or a KMS key), in the form device configuration takes: NAME:BASE64 for ed25519, NAME:ecdsa-p256:BASE64 for ECDSA.`,
		examples: `  nix-ota pubkey --key ~/.config/nix-ota/sign.key
  nix-ota pubkey --key fleet-kms=awskms:///arn:aws:kms:eu-central-1:123456789012:key/…`,
		flags: func(fs *pflag.FlagSet) func(context.Context, *Env, []string) error {
			kf := addKeyFlags(fs)
			return func(ctx context.Context, env *Env, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				signers, err := kf.load(ctx, env)
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
		},
	}
}

// keyFlags are the flags every signing command shares.
type keyFlags struct {
	keys   *[]string
	name   *string
	pwFile *string
}

func addKeyFlags(fs *pflag.FlagSet) keyFlags {
	return keyFlags{
		keys:   fs.StringArray("key", nil, "signing key: a key file, or a KMS URI as NAME=awskms://…, gcpkms://…, hashivault://… (repeatable, for --threshold; default $NIX_OTA_KEY)"),
		name:   fs.String("key-name", "", "override the key name stored in a single key file, or name a single KMS key"),
		pwFile: fs.String("password-file", "", "password of an encrypted key (else $NIX_OTA_KEY_PASSWORD, else prompt)"),
	}
}

// load reads the signing keys before any bucket I/O, so a missing or wrong
// key never leaves a half-done publish behind.
func (k keyFlags) load(ctx context.Context, env *Env) ([]signing.Key, error) {
	refs := *k.keys
	if len(refs) == 0 && env.Getenv("NIX_OTA_KEY") != "" {
		refs = []string{env.Getenv("NIX_OTA_KEY")}
	}
	if len(refs) == 0 {
		return nil, usagef("--key is required (a key file from nix-ota keygen, or a KMS URI)")
	}
	if len(refs) > 1 && *k.name != "" {
		return nil, usagef("--key-name names one key; with several --key give KMS keys as NAME=URI")
	}
	var signers []signing.Key
	seen := map[string]bool{}
	for _, ref := range refs {
		s, err := k.loadOne(ctx, env, ref)
		if err != nil {
			return nil, err
		}
		if seen[s.Name] {
			return nil, usagef("two signing keys are named %q; names must differ", s.Name)
		}
		seen[s.Name] = true
		signers = append(signers, s)
	}
	return signers, nil
}

func (k keyFlags) loadOne(ctx context.Context, env *Env, ref string) (signing.Key, error) {
	if name, uri, ok := strings.Cut(ref, "="); ok && strings.Contains(uri, "://") {
		return loadKMS(ctx, name, uri)
	}
	if strings.Contains(ref, "://") {
		return loadKMS(ctx, *k.name, ref)
	}
	pemBytes, err := os.ReadFile(ref)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return signing.Key{}, fmt.Errorf("key %s: file does not exist (create one with nix-ota keygen --out %s)", ref, ref)
		}
		return signing.Key{}, fmt.Errorf("key %s: %w", ref, err)
	}
	var pw []byte
	if signing.IsEncrypted(pemBytes) {
		if pw, err = readPassword(env, *k.pwFile, false); err != nil {
			return signing.Key{}, fmt.Errorf("key %s: %w", ref, err)
		}
	}
	s, err := signing.Load(pemBytes, *k.name, pw)
	if err != nil {
		return signing.Key{}, fmt.Errorf("key %s: %w", ref, err)
	}
	return s, nil
}

func signerNames(ss []signing.Key) string {
	var n []string
	for _, s := range ss {
		n = append(n, s.Name)
	}
	return strings.Join(n, "+")
}

func readPassword(env *Env, file string, confirm bool) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("password file: %w", err)
		}
		return []byte(strings.TrimRight(string(b), "\r\n")), nil
	}
	if pw := env.Getenv(passwordEnv); pw != "" {
		return []byte(pw), nil
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return nil, fmt.Errorf("key password needed: set $%s or --password-file (no terminal to ask on)", passwordEnv)
	}
	fmt.Fprint(env.Stderr, "Key password: ")
	pw, err := term.ReadPassword(int(os.Stdin.Fd()))
	fmt.Fprintln(env.Stderr)
	if err != nil {
		return nil, err
	}
	if confirm {
		fmt.Fprint(env.Stderr, "Repeat password: ")
		again, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(env.Stderr)
		if err != nil {
			return nil, err
		}
		if string(again) != string(pw) {
			return nil, errors.New("passwords do not match")
		}
	}
	if len(pw) == 0 {
		return nil, errors.New("empty password")
	}
	return pw, nil
}
