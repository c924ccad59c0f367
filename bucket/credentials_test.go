package bucket_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nix-ota/nix-ota/bucket"
)

func TestParseCredentialsFile(t *testing.T) {
	const good = `# written by provisioning
[other]
aws_access_key_id = OTHER
aws_secret_access_key = othersecret

[default]
aws_access_key_id=AKIDEXAMPLE
 aws_secret_access_key = wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY
aws_session_token = tok=en/+
region = eu-west-1
; a comment
`
	c, err := bucket.ParseCredentialsFile([]byte(good), "")
	if err != nil {
		t.Fatal(err)
	}
	if c != (bucket.Credentials{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", SessionToken: "tok=en/+"}) {
		t.Fatalf("default: %+v", c)
	}
	if c, err := bucket.ParseCredentialsFile([]byte(good), "other"); err != nil || c.AccessKeyID != "OTHER" || c.SessionToken != "" {
		t.Fatalf("other: %+v %v", c, err)
	}
	for name, in := range map[string]string{
		"empty":              "",
		"no default":         "[other]\naws_access_key_id=a\naws_secret_access_key=b\n",
		"no secret":          "[default]\naws_access_key_id=a\n",
		"no id":              "[default]\naws_secret_access_key=b\n",
		"unterminated":       "[default\naws_access_key_id=a\naws_secret_access_key=b\n",
		"not key=value":      "[default]\naws_access_key_id a\n",
		"space in key":       "[default]\naws_access_key_id=a b\naws_secret_access_key=b\n",
		"NUL in secret":      "[default]\naws_access_key_id=a\naws_secret_access_key=b\x00c\n",
		"binary":             "\x00\x01\x02",
		"line too long":      "[default]\naws_access_key_id=" + strings.Repeat("a", 70000) + "\n",
		"keys before header": "aws_access_key_id=a\naws_secret_access_key=b\n",
	} {
		if _, err := bucket.ParseCredentialsFile([]byte(in), "default"); !errors.Is(err, bucket.ErrCredentials) {
			t.Errorf("%s: %v, want ErrCredentials", name, err)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error spans lines", name)
		}
	}
}

func TestFileCredentials(t *testing.T) {
	p := filepath.Join(t.TempDir(), "creds")
	get := bucket.FileCredentials(p, "default")
	if _, err := get(ctx); err == nil || !strings.Contains(err.Error(), "credentials file") {
		t.Fatalf("missing file: %v", err)
	}
	write := func(id string) {
		if err := os.WriteFile(p, []byte("[default]\naws_access_key_id="+id+"\naws_secret_access_key=s\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("one")
	if c, err := get(ctx); err != nil || c.AccessKeyID != "one" {
		t.Fatalf("%+v %v", c, err)
	}
	write("two") // rotated on disk: picked up without reopening the bucket
	if c, err := get(ctx); err != nil || c.AccessKeyID != "two" {
		t.Fatalf("after rotation: %+v %v", c, err)
	}
}

func FuzzParseCredentialsFile(f *testing.F) {
	f.Add([]byte("[default]\naws_access_key_id=a\naws_secret_access_key=b\n"), "default")
	f.Add([]byte("[x]\n[default\n=\n"), "x")
	f.Fuzz(func(t *testing.T, data []byte, profile string) {
		c, err := bucket.ParseCredentialsFile(data, profile)
		if err != nil {
			if !errors.Is(err, bucket.ErrCredentials) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("bad error %q", err)
			}
			return
		}
		if c.AccessKeyID == "" || c.SecretAccessKey == "" || strings.ContainsAny(c.AccessKeyID+c.SecretAccessKey+c.SessionToken, " \t\x00\n") {
			t.Fatalf("accepted unusable credentials %+v", c)
		}
	})
}
