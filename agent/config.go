package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nix-ota/nix-ota/bucket"
	"github.com/nix-ota/nix-ota/manifest"
	"github.com/nix-ota/nix-ota/nix"
)

// Config is the agent's configuration: a JSON file (the NixOS module writes
// it with pkgs.formats.json; examples/agent-config.json shows every field)
// and/or flags of the same names.
type Config struct {
	Bucket       string   `json:"bucket"`
	Channel      string   `json:"channel"`
	PublicKeys   []string `json:"publicKeys"`
	Threshold    int      `json:"threshold,omitempty"`
	DeviceID     string   `json:"deviceId,omitempty"`
	DeviceClass  string   `json:"deviceClass,omitempty"`
	StateDir     string   `json:"stateDir,omitempty"`
	Profile      string   `json:"profile,omitempty"`
	Substituters []string `json:"substituters,omitempty"`
	// AllowedSubstituters, when set, are the only URL prefixes a signed
	// manifest may name as substituters (for operators who pin caches).
	AllowedSubstituters []string `json:"allowedSubstituters,omitempty"`
	TrustedCacheKeys    []string `json:"trustedCacheKeys,omitempty"`
	HealthChecks        []string `json:"healthChecks,omitempty"`
	HealthTimeout       Duration `json:"healthTimeout,omitempty"`
	StatusBucket        string   `json:"statusBucket,omitempty"`
	StatusCredentials   string   `json:"statusCredentials,omitempty"`
	Switch              string   `json:"switch,omitempty"`
	SwitchVia           string   `json:"switchVia,omitempty"`
	Interval            Duration `json:"interval,omitempty"`
	Jitter              Duration `json:"jitter,omitempty"`
	Heartbeat           Duration `json:"heartbeat,omitempty"`
	PrometheusFile      string   `json:"prometheusFile,omitempty"`
	AllowReboot         bool     `json:"allowReboot,omitempty"`
	RebootWindow        string   `json:"rebootWindow,omitempty"`
	KeepGenerations     int      `json:"keepGenerations,omitempty"`
	MinFreeSpace        string   `json:"minFreeSpace,omitempty"`
	// IdentityKey is the device's ed25519 check-in key (PKCS#8 PEM); the
	// agent creates it on first start if the file does not exist.
	IdentityKey string `json:"identityKey,omitempty"`
	// NoDeltas: fetch every path as a whole NAR, even where the cache has
	// a delta against a path this device holds (docs/agent.md, Delta
	// updates): for devices on unmetered links that would rather spare the
	// rebuild's CPU and disk writes.
	NoDeltas bool `json:"noDeltas,omitempty"`
}

// Duration is a time.Duration written as "60s" in JSON.
type Duration struct{ time.Duration }

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"60s\": %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// Defaults.
const (
	DefaultStateDir      = "/var/lib/nix-ota"
	DefaultProfile       = "/nix/var/nix/profiles/system"
	DefaultInterval      = 60 * time.Second
	DefaultHealthTimeout = 60 * time.Second
	// DefaultHeartbeat keeps a device at 60 s polling within $0.02 a month
	// on S3 (docs/cost.md): status changes are written at once anyway; the
	// heartbeat only proves an idle device alive. Mender's inventory
	// interval defaults to the same 8 hours.
	DefaultHeartbeat = 8 * time.Hour
	// DefaultKeepGenerations bounds the system profile on small devices.
	DefaultKeepGenerations = 10
)

// ErrConfig marks configuration errors.
var ErrConfig = errors.New("invalid agent configuration")

// ParseConfig reads a JSON configuration strictly: an unknown field is an
// error, since a typo in a security setting must not pass silently.
func ParseConfig(b []byte) (*Config, error) {
	if len(b) > 1<<20 {
		return nil, fmt.Errorf("%w: larger than 1 MiB", ErrConfig)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrConfig)
	}
	return &c, nil
}

// LoadConfig reads a configuration file.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// withDefaults fills unset fields.
func (c *Config) withDefaults() {
	if c.DeviceID == "" {
		c.DeviceID, _ = os.Hostname()
	}
	if c.DeviceClass == "" {
		c.DeviceClass = manifest.DefaultClass
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.IdentityKey == "" {
		c.IdentityKey = filepath.Join(c.StateDir, IdentityKeyFile)
	}
	if c.Profile == "" {
		c.Profile = DefaultProfile
	}
	if c.Threshold == 0 {
		c.Threshold = 1
	}
	if c.HealthTimeout.Duration == 0 {
		c.HealthTimeout.Duration = DefaultHealthTimeout
	}
	if c.Interval.Duration == 0 {
		c.Interval.Duration = DefaultInterval
	}
	if c.Jitter.Duration == 0 {
		c.Jitter.Duration = c.Interval.Duration / 4
	}
	if c.Heartbeat.Duration == 0 {
		c.Heartbeat.Duration = max(DefaultHeartbeat, c.Interval.Duration)
	}
	if c.Switch == "" {
		c.Switch = manifest.SwitchNow
	}
	if c.KeepGenerations == 0 {
		c.KeepGenerations = DefaultKeepGenerations
	}
	if c.SwitchVia == "" {
		c.SwitchVia = string(nix.SwitchViaAuto)
	}
	if c.StatusBucket == "" && (strings.HasPrefix(c.Bucket, "file://") || strings.HasPrefix(c.Bucket, "s3://")) {
		c.StatusBucket = c.Bucket
	}
}

// problems collects configuration problems, one line each.
type problems []string

func (p *problems) add(format string, a ...any) { *p = append(*p, fmt.Sprintf(format, a...)) }

// Check validates a configuration (after defaults) and returns the trust
// it describes. Every problem is reported, one per line.
func (c *Config) Check() (manifest.Trust, error) {
	var errs problems
	c.checkBuckets(&errs)
	c.checkIdentity(&errs)
	trust := c.checkTrust(&errs)
	c.checkCaches(&errs)
	c.checkSettings(&errs)
	if len(errs) > 0 {
		return manifest.Trust{}, fmt.Errorf("%w: %s", ErrConfig, strings.Join(errs, "; "))
	}
	return trust, nil
}

func (c *Config) checkBuckets(errs *problems) {
	if c.Bucket == "" {
		errs.add("bucket is required (file://, s3:// or https:// URL of the bucket holding channels/)")
	} else if _, err := bucket.Open(c.Bucket, bucket.Options{}); err != nil && !errors.Is(err, bucket.ErrUnreachable) {
		errs.add("bucket: %v", err)
	}
	if c.StatusBucket != "" && strings.HasPrefix(c.StatusBucket, "http") {
		errs.add("statusBucket %s: must be writable (s3:// or file://)", c.StatusBucket)
	} else if c.StatusBucket != "" {
		if _, err := bucket.Open(c.StatusBucket, bucket.Options{}); err != nil && !errors.Is(err, bucket.ErrUnreachable) {
			errs.add("statusBucket: %v", err)
		}
	}
}

func (c *Config) checkIdentity(errs *problems) {
	if err := manifest.ValidateName("channel", c.Channel); err != nil {
		errs.add("channel: %v", err)
	}
	if err := manifest.ValidateName("device id", c.DeviceID); err != nil {
		errs.add("deviceId: %v (set deviceId; the hostname is not a valid id)", err)
	}
	if err := manifest.ValidateName("device class", c.DeviceClass); err != nil {
		errs.add("deviceClass: %v", err)
	}
}

func (c *Config) checkTrust(errs *problems) manifest.Trust {
	trust := manifest.Trust{Threshold: c.Threshold}
	if len(c.PublicKeys) == 0 {
		errs.add("publicKeys: at least one trusted manifest key (NAME:BASE64) is required")
	}
	for _, k := range c.PublicKeys {
		pk, err := manifest.ParsePublicKey(k)
		if err != nil {
			errs.add("publicKeys: %v", err)
			continue
		}
		trust.Keys = append(trust.Keys, pk)
	}
	if len(trust.Keys) > 0 {
		if err := trust.Check(); err != nil {
			errs.add("%v", err)
		}
	}
	return trust
}

func (c *Config) checkCaches(errs *problems) {
	for _, s := range c.Substituters {
		if err := manifest.ValidateSubstituter(s); err != nil {
			errs.add("substituters: %v", err)
		}
	}
	for _, s := range c.AllowedSubstituters {
		if err := manifest.ValidateSubstituter(s); err != nil {
			errs.add("allowedSubstituters: %v", err)
		}
	}
	for _, k := range c.TrustedCacheKeys {
		if name, b64, ok := strings.Cut(k, ":"); !ok || name == "" || b64 == "" || strings.ContainsAny(k, " \t\n") {
			errs.add("trustedCacheKeys: %q is not NAME:BASE64", k)
		}
	}
}

func (c *Config) checkSettings(errs *problems) {
	if c.Switch != manifest.SwitchNow && c.Switch != manifest.SwitchBoot {
		errs.add("switch: %q (want switch or boot)", c.Switch)
	}
	if _, err := nix.ParseSwitchVia(c.SwitchVia); err != nil {
		errs.add("switchVia: %v", err)
	}
	if !strings.HasPrefix(c.StateDir, "/") || !strings.HasPrefix(c.Profile, "/") {
		errs.add("stateDir and profile must be absolute paths")
	}
	c.checkIdentityKey(errs)
	if c.Interval.Duration < time.Second || c.HealthTimeout.Duration <= 0 || c.Jitter.Duration < 0 || c.Heartbeat.Duration < c.Interval.Duration {
		errs.add("interval must be at least 1s, healthTimeout positive, jitter not negative, heartbeat at least the interval")
	}
	if _, err := ParseSize(c.MinFreeSpace); err != nil {
		errs.add("minFreeSpace: %v", err)
	}
	if c.KeepGenerations < 0 {
		errs.add("keepGenerations must not be negative")
	}
	if _, err := ParseWindow(c.RebootWindow); err != nil {
		errs.add("rebootWindow: %v", err)
	}
}

// checkIdentityKey: the key file's path must be absolute and outside the
// Nix store, which every user can read.
func (c *Config) checkIdentityKey(errs *problems) {
	switch k := c.IdentityKey; {
	case k == "":
	case !strings.HasPrefix(k, "/"):
		errs.add("identityKey %q: must be an absolute path", k)
	case filepath.Clean(k) == "/nix/store" || strings.HasPrefix(filepath.Clean(k), "/nix/store/"):
		errs.add("identityKey %s: must not be in the Nix store, which every user can read; leave it unset (the state directory) or point it at a private file", k)
	}
}

// Prepare fills defaults and checks the result; what embedders (tests,
// benchmarks, fleet simulations) call before building an Agent.
func (c *Config) Prepare() (manifest.Trust, error) {
	c.withDefaults()
	return c.Check()
}

// ParseSize reads "500M", "2G", "1.5G" or a byte count; "" is 0 (off).
func ParseSize(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	mult := 1.0
	num := strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "B")
	switch {
	case strings.HasSuffix(num, "K"):
		mult, num = 1<<10, strings.TrimSuffix(num, "K")
	case strings.HasSuffix(num, "M"):
		mult, num = 1<<20, strings.TrimSuffix(num, "M")
	case strings.HasSuffix(num, "G"):
		mult, num = 1<<30, strings.TrimSuffix(num, "G")
	case strings.HasSuffix(num, "T"):
		mult, num = 1<<40, strings.TrimSuffix(num, "T")
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("size %q: want a number with K, M, G or T", s)
	}
	return uint64(v * mult), nil
}
