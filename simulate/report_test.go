package simulate

import (
	"bytes"
	"strings"
	"testing"
)

// TestReportWithoutDeployments: -deploys 0 prints no latency line of
// zeros, and no empty deployment table.
func TestReportWithoutDeployments(t *testing.T) {
	var out bytes.Buffer
	(&Report{Target: "https://x", Gateways: 1, APIs: 5000, AllDelivered: true, AllConverged: true, Errors: []string{}}).WriteTable(&out)
	if s := out.String(); strings.Contains(s, "delivery latency") || strings.Contains(s, "convergence       worst") ||
		strings.Contains(s, "revision") || !strings.Contains(s, "none (-deploys 0)") {
		t.Fatalf("report:\n%s", s)
	}
}

// TestReportMissedButConverged: a live event that reached no connection,
// whose gateway converged from the state sent on connect, is said so, not
// left as a bare "all delivered false".
func TestReportMissedButConverged(t *testing.T) {
	var out bytes.Buffer
	(&Report{Target: "https://x", Gateways: 10, Deploys: 2, AllDelivered: false, AllConverged: true, Errors: []string{},
		Deployments: []DeploymentReport{{Delivered: 10, Converged: true}, {Delivered: 8, Churned: 1, Converged: true}}}).WriteTable(&out)
	if s := out.String(); !strings.Contains(s, "not delivered: 1 live event") || !strings.Contains(s, "converged anyway") {
		t.Fatalf("report:\n%s", s)
	}
}
