package dashboard

import (
	"github.com/nix-ota/nix-ota/channel"
	"github.com/nix-ota/nix-ota/status"
)

// Reports are the devices as the rollout rules (channel.Step.Classify) see
// them. An invalid status blob is left out: nothing it says can count.
func (f *Fleet) Reports() []channel.Report {
	out := make([]channel.Report, 0, len(f.Devices))
	for _, d := range f.Devices {
		if d.State != Invalid {
			out = append(out, d.report())
		}
	}
	return out
}

// report is the device's check-in as it reported it: the rules judge the
// reported state, not the row's derived one.
func (d Device) report() channel.Report {
	return channel.Report{Offline: d.Offline, Contested: d.Contested, Status: status.Status{
		DeviceID: d.ID, Channel: d.Channel, Class: d.Class, State: d.Reported, Revision: d.Revision,
		Attempted: d.Attempted, StorePath: d.StorePath, CheckedAt: d.CheckedAt, LastError: d.LastError,
	}}
}
