// Package dashboard renders the static fleet dashboard (index.html and
// dashboard.json) from a bucket's channels and device statuses. The CLI
// alone links it; the agent never does.
package dashboard
