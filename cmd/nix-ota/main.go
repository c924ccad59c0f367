// Command nix-ota is the publisher's CLI; see package cli.
package main

import "github.com/nix-ota/nix-ota/cli"

func main() { cli.Main() }
