package cli

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/nix-ota/nix-ota/manifest/signing"
)

// passwordEnv names the environment variable holding a key's password, for
// CI jobs that keep the key encrypted at rest.
const passwordEnv = "NIX_OTA_KEY_PASSWORD"

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
	if isNixCacheKey(pemBytes) {
		return signing.Key{}, usagef("key %s: that is a Nix binary cache key; give it as --cache-key (the manifest signing key comes from nix-ota keygen)", ref)
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

// isNixCacheKey tells a Nix binary cache secret key (NAME:BASE64 of a
// 64-byte ed25519 key, from nix-store --generate-binary-cache-key) from a
// nix-ota signing key, so giving one for the other says which flag it
// belongs to.
func isNixCacheKey(b []byte) bool {
	name, key, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
	if !ok || name == "" || strings.ContainsAny(name, " \t\n") {
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(key)
	return err == nil && len(raw) == ed25519.PrivateKeySize
}
