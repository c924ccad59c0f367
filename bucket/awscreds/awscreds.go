// Package awscreds resolves S3 credentials the way AWS tools do (the
// environment, shared config and SSO profiles, web identity for CI OIDC,
// container and instance roles) with aws-sdk-go-v2, and hands them to
// minio-go, which does the data path. Only the CLI links it: the agent
// stays small and uses static or file credentials.
package awscreds

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/smithy-go/logging"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// provider adapts an aws.CredentialsProvider to minio-go's Provider.
type provider struct {
	aws     aws.CredentialsProvider
	expires time.Time
	canExp  bool
}

// ErrNoCredentials is the chain finding no credentials anywhere: it fell
// through to the EC2 instance metadata service, and that had none.
var ErrNoCredentials = errors.New("no AWS credentials found")

// New loads the default AWS chain, optionally for a named profile (the
// s3:// URL's profile= parameter). Resolution is lazy: nothing is fetched
// until the first request. The SDK's own logger is silenced: what went
// wrong comes back as one error, not as log lines on stderr.
func New(ctx context.Context, profile string) (*credentials.Credentials, error) {
	opts := []func(*config.LoadOptions) error{config.WithLogger(logging.Nop{}), config.WithClientLogMode(0)}
	if profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(profile))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("aws credentials (profile %q): %w", profile, err)
	}
	if cfg.Credentials == nil {
		return credentials.New(&credentials.EnvMinio{}), nil
	}
	return credentials.New(&provider{aws: aws.NewCredentialsCache(cfg.Credentials)}), nil
}

func (p *provider) Retrieve() (credentials.Value, error) {
	return p.RetrieveWithCredContext(nil)
}

func (p *provider) RetrieveWithCredContext(_ *credentials.CredContext) (credentials.Value, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := p.aws.Retrieve(ctx)
	if err != nil {
		if strings.Contains(err.Error(), "EC2 IMDS") {
			return credentials.Value{}, fmt.Errorf("%w: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or profile= in the bucket URL (or log in with aws sso login, or run where a web identity or instance role provides them)", ErrNoCredentials)
		}
		return credentials.Value{}, fmt.Errorf("aws credentials: %w", err)
	}
	p.expires, p.canExp = v.Expires, v.CanExpire
	return credentials.Value{
		AccessKeyID:     v.AccessKeyID,
		SecretAccessKey: v.SecretAccessKey,
		SessionToken:    v.SessionToken,
		Expiration:      v.Expires,
		SignerType:      credentials.SignatureV4,
	}, nil
}

// IsExpired asks for a refresh a minute early; the AWS cache underneath
// does the actual renewal.
func (p *provider) IsExpired() bool {
	return p.canExp && time.Now().Add(time.Minute).After(p.expires)
}
