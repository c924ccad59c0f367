package cli

import (
	"context"
	"fmt"
)

func versionCmd() *command {
	return &command{
		name: "version", summary: "print the version",
		about: "Prints the version of this nix-ota build.",
		run: func(_ context.Context, env *Env, _ []string) error {
			fmt.Fprintf(env.Stdout, "nix-ota %s\n", Version)
			return nil
		},
	}
}
