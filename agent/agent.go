// Package agent is nix-ota-agent, the device side.
package agent

import (
	"fmt"
	"os"
)

// Main runs the agent with the process's arguments and exits.
func Main() {
	fmt.Fprintln(os.Stderr, "nix-ota-agent: not implemented yet")
	os.Exit(1)
}
