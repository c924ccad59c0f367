package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"

	"github.com/spf13/pflag"

	"github.com/nix-ota/nix-ota/manifest"
)

// identityJSON is what `identity --json` prints.
type identityJSON struct {
	DeviceID    string `json:"deviceId"`
	Key         string `json:"key"`
	Fingerprint string `json:"fingerprint"`
	KeyFile     string `json:"keyFile"`
	Generated   bool   `json:"generated"`
}

// identityCmd runs `identity [--config FILE] [--json]`: the device's public
// key, for a publisher to register before the device first checks in
// (nix-ota device add ID --key ...). It loads the key as a start does,
// creating it if there is none yet.
func identityCmd(args []string, stdout io.Writer, logger *log.Logger) int {
	cfg, asJSON, code := identityConfig(args, stdout, logger)
	if cfg == nil {
		return code
	}
	id, err := loadIdentity(cfg)
	if err != nil {
		logger.Printf("nix-ota-agent identity: %v", err)
		if errors.Is(err, ErrStateNotSaved) {
			return ExitStateNotSaved
		}
		return ExitFailed
	}
	if id.Generated {
		logger.Printf("nix-ota-agent %s", id.generatedLine(cfg.DeviceID))
	}
	defer clear(id.Key) // only the public half is printed
	out := identityJSON{DeviceID: cfg.DeviceID, Key: id.Public(), Fingerprint: id.Fingerprint(), KeyFile: id.Path, Generated: id.Generated}
	if asJSON {
		b, _ := json.MarshalIndent(out, "", "  ") // strings and a bool always marshal
		fmt.Fprintf(stdout, "%s\n", b)
		return ExitOK
	}
	fmt.Fprintf(stdout, "device:      %s\nkey:         %s\nfingerprint: %s\nkey file:    %s\nregister it: nix-ota device add %s --key %s\n",
		out.DeviceID, out.Key, out.Fingerprint, out.KeyFile, out.DeviceID, out.Key)
	return ExitOK
}

// identityConfig reads identity's flags and configuration: the file, with
// flags over it, and defaults. Only what identity needs is checked (the
// device id, the key's path), so it also works with a partial file.
func identityConfig(args []string, stdout io.Writer, logger *log.Logger) (*Config, bool, int) {
	var path string
	var asJSON bool
	parse := func(c *Config) error {
		fs := flagSet(c, &path)
		fs.BoolVar(&asJSON, "json", false, "print JSON")
		err := fs.Parse(args)
		if err == nil && fs.NArg() > 0 {
			err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
		}
		return err
	}
	if err := parse(&Config{}); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			usage(stdout)
			return nil, false, ExitOK
		}
		logger.Printf("nix-ota-agent identity: %v", err)
		return nil, false, ExitUsage
	}
	cfg, err := (&configSource{path: path, args: args}).loadWith(parse)
	if err != nil {
		logger.Printf("nix-ota-agent identity: %v", err)
		return nil, false, ExitUsage
	}
	var errs problems
	if err := manifest.ValidateName("device id", cfg.DeviceID); err != nil {
		errs.add("deviceId: %v (set deviceId; the hostname is not a valid id)", err)
	}
	cfg.checkIdentityKey(&errs)
	if len(errs) > 0 {
		logger.Printf("nix-ota-agent identity: %v: %s", ErrConfig, errs[0])
		return nil, false, ExitUsage
	}
	return cfg, asJSON, ExitOK
}
