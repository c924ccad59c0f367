package bucket

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Credentials are S3 access keys. The zero value means anonymous: requests
// go out unsigned.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
}

// Anonymous reports whether c signs nothing.
func (c Credentials) Anonymous() bool { return c.AccessKeyID == "" && c.SecretAccessKey == "" }

// CredentialsFunc returns the credentials for the next request. The
// built-in s3:// client asks before every request, so keys rotated on disk
// (short-lived STS sessions written by a provisioning job) are picked up
// without a restart.
type CredentialsFunc func(ctx context.Context) (Credentials, error)

// StaticCredentials always returns the same keys.
func StaticCredentials(accessKey, secretKey, sessionToken string) CredentialsFunc {
	c := Credentials{accessKey, secretKey, sessionToken}
	return func(context.Context) (Credentials, error) { return c, nil }
}

// EnvCredentials reads AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
// AWS_SESSION_TOKEN, else MINIO_ROOT_USER / MINIO_ROOT_PASSWORD, else
// nothing (anonymous).
func EnvCredentials(context.Context) (Credentials, error) {
	if id := os.Getenv("AWS_ACCESS_KEY_ID"); id != "" {
		return Credentials{id, os.Getenv("AWS_SECRET_ACCESS_KEY"), os.Getenv("AWS_SESSION_TOKEN")}, nil
	}
	if id := os.Getenv("MINIO_ROOT_USER"); id != "" {
		return Credentials{AccessKeyID: id, SecretAccessKey: os.Getenv("MINIO_ROOT_PASSWORD")}, nil
	}
	return Credentials{}, nil
}

// MaxCredentialsFileSize bounds how much of a credentials file is read.
const MaxCredentialsFileSize = 64 << 10

// FileCredentials reads a profile from an AWS shared credentials file
// ("[default]" then aws_access_key_id = …, aws_secret_access_key = …,
// aws_session_token = …) on every call.
func FileCredentials(path, profile string) CredentialsFunc {
	return func(context.Context) (Credentials, error) {
		f, err := os.Open(path)
		if err != nil {
			return Credentials{}, fmt.Errorf("credentials file: %w", err)
		}
		defer f.Close()
		data, err := ReadLimited(f, MaxCredentialsFileSize)
		if err != nil {
			return Credentials{}, fmt.Errorf("credentials file %s: %w", path, err)
		}
		c, err := ParseCredentialsFile(data, profile)
		if err != nil {
			return Credentials{}, fmt.Errorf("credentials file %s: %w", path, err)
		}
		return c, nil
	}
}

// ErrCredentials: a credentials file that cannot be used.
var ErrCredentials = errors.New("unusable credentials")

// ParseCredentialsFile reads one profile of the AWS shared credentials
// format: "[name]" section headers, "key = value" lines, '#' and ';'
// comment lines. Keys other than the three it needs are ignored, as AWS
// tools do. The profile must set both the access key id and the secret.
func ParseCredentialsFile(data []byte, profile string) (Credentials, error) {
	if profile == "" {
		profile = "default"
	}
	var c Credentials
	section, found := "", false
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), MaxCredentialsFileSize)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
			continue
		case line[0] == '[':
			if !strings.HasSuffix(line, "]") {
				return Credentials{}, fmt.Errorf("%w: line %d: unterminated section header", ErrCredentials, n)
			}
			section = strings.TrimSpace(line[1 : len(line)-1])
			found = found || section == profile
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return Credentials{}, fmt.Errorf("%w: line %d: want key = value", ErrCredentials, n)
		}
		if section != profile {
			continue
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(strings.TrimSpace(key)) {
		case "aws_access_key_id":
			c.AccessKeyID = value
		case "aws_secret_access_key":
			c.SecretAccessKey = value
		case "aws_session_token":
			c.SessionToken = value
		}
	}
	if err := sc.Err(); err != nil {
		return Credentials{}, fmt.Errorf("%w: %v", ErrCredentials, err)
	}
	switch {
	case !found:
		return Credentials{}, fmt.Errorf("%w: no profile %q", ErrCredentials, profile)
	case c.AccessKeyID == "" || c.SecretAccessKey == "":
		return Credentials{}, fmt.Errorf("%w: profile %q needs aws_access_key_id and aws_secret_access_key", ErrCredentials, profile)
	case strings.ContainsAny(c.AccessKeyID+c.SecretAccessKey+c.SessionToken, " \t\x00"):
		return Credentials{}, fmt.Errorf("%w: profile %q: a key contains whitespace or NUL", ErrCredentials, profile)
	}
	return c, nil
}
