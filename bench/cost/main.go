// Command cost computes what one device costs a month on S3 Standard list
// prices with the agent's default settings at 60-second polling, from
// figures `make bench` measured earlier in the same run (bench/agentpoll:
// the bytes of an idle poll's 304 answer) and the agent's defaults. It
// writes "cost_per_device_month_usd_s3" and its inputs to bench/results.json
// under "scale". docs/cost.md explains every line.
//
//	go run ./bench/cost
package main

import (
	"encoding/json"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/nix-ota/nix-ota/agent"
	"github.com/nix-ota/nix-ota/internal/benchutil"
)

// S3 Standard, US East (N. Virginia), list prices (docs/cost.md, Prices used).
const (
	getPrice  = 0.0004 / 1000 // per GET (and HEAD), a 304 included
	putPrice  = 0.005 / 1000  // per PUT
	egressGB  = 0.09          // per GB out to the internet, past the free 100 GB
	pollEvery = 60 * time.Second
	month     = 30 * 24 * time.Hour
	// An update costs the device a manifest GET (~2 KB) and about three
	// status PUTs (downloading, switching, up-to-date); two a month.
	updates, updatePuts, manifestBytes = 2, 3, 2048
)

func main() {
	log.SetFlags(0)
	b, err := os.ReadFile(benchutil.ResultsFile)
	if err != nil {
		log.Fatalf("bench/cost: %v (run bench/agentpoll first)", err)
	}
	var res struct {
		Agent struct {
			Response int64 `json:"once_idle_response_bytes_s3"`
		} `json:"agent"`
	}
	if err := json.Unmarshal(b, &res); err != nil || res.Agent.Response <= 0 {
		log.Fatalf("bench/cost: %s has no agent.once_idle_response_bytes_s3 (run bench/agentpoll first): %v", benchutil.ResultsFile, err)
	}
	polls := float64(month / pollEvery)
	heartbeats := float64(month / max(agent.DefaultHeartbeat, pollEvery))
	gets := polls + updates
	puts := heartbeats + updates*updatePuts
	bytesOut := polls*float64(res.Agent.Response) + updates*manifestBytes
	cost := gets*getPrice + puts*putPrice + bytesOut/1e9*egressGB
	fmt.Printf("per device and month on S3 at 60 s polling, defaults (heartbeat %s):\n", agent.DefaultHeartbeat)
	fmt.Printf("  %.0f GET ($%.5f) + %.0f PUT ($%.5f) + %.1f MB out at %d B per 304 ($%.5f) = $%.4f\n",
		gets, gets*getPrice, puts, puts*putPrice, bytesOut/1e6, res.Agent.Response, bytesOut/1e9*egressGB, cost)
	err = benchutil.MergeResult("scale", map[string]any{
		"cost_per_device_month_usd_s3": cost,
		"cost_inputs": map[string]any{"polls": polls, "gets": gets, "puts": puts, "bytes_out": bytesOut, "response_bytes_304": res.Agent.Response,
			"heartbeat_s": agent.DefaultHeartbeat.Seconds(), "get_usd": getPrice, "put_usd": putPrice, "egress_usd_gb": egressGB},
	})
	if err != nil {
		log.Fatalf("bench/cost: %v", err)
	}
}
