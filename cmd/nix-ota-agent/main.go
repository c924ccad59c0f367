// Command nix-ota-agent runs on every device; see package agent.
package main

import "github.com/nix-ota/nix-ota/agent"

func main() { agent.Main() }
