package agent

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// TestFlagsOverFile: a flag given on the command line overrides the
// file's field (a repeatable one replaces the file's list, a false bool
// clears a true one); a flag not given leaves the file's value; defaults
// fill what neither sets. The same holds when the daemon rereads a
// changed file.
func TestFlagsOverFile(t *testing.T) {
	_, pub := key(t, "k")
	path := filepath.Join(t.TempDir(), "agent.json")
	write := func(channel string) {
		body := `{"bucket":"file:///srv/ota","channel":"` + channel + `","publicKeys":["` + pub.String() + `"],"deviceId":"kiosk-1",` +
			`"interval":"40s","allowReboot":true,"healthChecks":["true"],"substituters":["https://a.example.org"],"switchVia":"direct"}`
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("prod")
	src := &configSource{path: path, args: []string{"--config", path, "--bucket", "file:///mnt/ota", "--allow-reboot=false",
		"--substituter", "https://b.example.org", "--substituter", "https://c.example.org", "--state-dir", "/tmp/state"}}
	check := func(wantChannel string) {
		t.Helper()
		c, err := src.load()
		if err != nil {
			t.Fatal(err)
		}
		given := c.Bucket == "file:///mnt/ota" && !c.AllowReboot && c.StateDir == "/tmp/state" &&
			slices.Equal(c.Substituters, []string{"https://b.example.org", "https://c.example.org"})
		if !given {
			t.Errorf("flags given do not override the file: %+v", c)
		}
		kept := c.Channel == wantChannel && c.DeviceID == "kiosk-1" && c.Interval.Duration == 40*time.Second &&
			slices.Equal(c.HealthChecks, []string{"true"}) && slices.Equal(c.PublicKeys, []string{pub.String()}) && c.SwitchVia == "direct"
		if !kept {
			t.Errorf("flags not given changed the file's values: %+v", c)
		}
		if c.Jitter.Duration != 10*time.Second || c.Profile != DefaultProfile || c.Threshold != 1 {
			t.Errorf("defaults not filled from the file's values: %+v", c)
		}
		if _, err := c.Check(); err != nil {
			t.Errorf("check: %v", err)
		}
	}
	check("prod")
	write("beta") // the daemon rereads the file: the flags stay over it
	check("beta")

	noFile := &configSource{args: []string{"--channel", "prod", "--interval", "2m"}}
	c, err := noFile.load()
	if err != nil || c.Channel != "prod" || c.Interval.Duration != 2*time.Minute || c.StateDir != DefaultStateDir {
		t.Fatalf("flags without a file: %v %+v", err, c)
	}
}

// TestEveryFieldHasAFlag: each flag writes exactly one Config field, and
// every field has one, so nothing in the file is out of the command
// line's reach.
func TestEveryFieldHasAFlag(t *testing.T) {
	sample := map[string]string{"bool": "true", "int": "7", "duration": "7s", "string": "x", "stringArray": "x"}
	covered := map[string]string{}
	var path string
	flagSet(&Config{}, &path).VisitAll(func(f *pflag.Flag) {
		if f.Name == "config" {
			return
		}
		var c Config
		v, ok := sample[f.Value.Type()]
		if !ok {
			t.Fatalf("--%s: no sample value for type %s", f.Name, f.Value.Type())
		}
		if err := flagSet(&c, new(string)).Parse([]string{"--" + f.Name + "=" + v}); err != nil {
			t.Fatalf("--%s=%s: %v", f.Name, v, err)
		}
		var changed []string
		rv, zero := reflect.ValueOf(c), reflect.ValueOf(Config{})
		for i := range rv.NumField() {
			if !reflect.DeepEqual(rv.Field(i).Interface(), zero.Field(i).Interface()) {
				changed = append(changed, rv.Type().Field(i).Name)
			}
		}
		if len(changed) != 1 {
			t.Fatalf("--%s changes fields %v, want exactly one", f.Name, changed)
		}
		if other, dup := covered[changed[0]]; dup {
			t.Fatalf("--%s and --%s both set %s", f.Name, other, changed[0])
		}
		covered[changed[0]] = f.Name
	})
	if n := reflect.TypeFor[Config]().NumField(); len(covered) != n {
		t.Fatalf("flags set %d of Config's %d fields: %v", len(covered), n, covered)
	}
}
