// Command gateway is a tiny gateway for trying platform-api by hand: it
// connects to the gateway channel with a gateway token, prints every frame,
// and downloads the API of each api.deployed event. With -generation 2 it
// behaves as a 2026 gateway: it posts its manifest as it connects, applies
// an event only when its performedAt is newer than what it holds, and
// acknowledges what it applied; it also keeps API keys as contract §7
// says: it pulls GET /apis/api-keys on connect, applies apikey.created,
// .updated and .revoked (dropping a key for an API it does not hold) and
// application.updated, and prints the keys it holds after each. It skips certificate checks unless -ca is
// given, so it is for a laptop, not for production.
//
//	go run ./testdata/gateway -url https://localhost:8443 -key gwt_... [-generation 2]
package main

import (
	"archive/zip"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/net/websocket"

	"platform-api/simulate"
)

type gateway struct {
	base, key string
	gen       int
	client    *http.Client
	ws        *websocket.Conn
	held      map[string]time.Time // API -> performedAt applied (generation 2)
	keys      map[string]string    // apiId/key name -> SHA-256 (generation 2)
	apps      map[string][]string  // application -> key uuids (generation 2)
}

func main() {
	base := flag.String("url", "https://localhost:8443", "platform-api base URL")
	key := flag.String("key", os.Getenv("GATEWAY_TOKEN"), "gateway token (or GATEWAY_TOKEN)")
	ca := flag.String("ca", "", "PEM file of the server certificate to trust (default: trust any)")
	gen := flag.Int("generation", 1, "gateway generation: 1 (late 2025) or 2 (2026: manifest, acknowledgements, RestApi)")
	flag.Parse()
	tlsCfg := &tls.Config{InsecureSkipVerify: true}
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			log.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tlsCfg = &tls.Config{RootCAs: pool}
	}
	g := &gateway{base: *base, key: *key, gen: *gen, held: map[string]time.Time{}, keys: map[string]string{},
		apps:   map[string][]string{},
		client: &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}}
	wsURL := "wss://" + strings.TrimPrefix(*base, "https://") + "/api/internal/v1/ws/gateways/connect"
	cfg, err := websocket.NewConfig(wsURL, *base)
	if err != nil {
		log.Fatal(err)
	}
	cfg.Header.Set("api-key", *key)
	addr := cfg.Location.Host
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, "443")
	}
	wsTLS := tlsCfg.Clone()
	wsTLS.NextProtos = []string{"http/1.1"} // a WebSocket needs HTTP/1.1
	nc, err := tls.Dial("tcp", addr, wsTLS)
	if err != nil {
		log.Fatalf("connect: %v", err)
	}
	// The recorder keeps what the server answered, to say why it refused
	// the handshake or ended the connection.
	rec := &simulate.ConnRecorder{Conn: nc, KeepTail: true}
	if g.ws, err = websocket.NewClient(cfg, rec); err != nil {
		if errors.Is(err, websocket.ErrBadStatus) {
			log.Fatalf("connect refused: %s", rec.Refusal())
		}
		log.Fatalf("connect: %v", err)
	}
	for {
		var msg string
		if err := websocket.Message.Receive(g.ws, &msg); err != nil {
			if errors.Is(err, io.EOF) {
				log.Fatalf("connection closed by the server: %s", rec.CloseDescription())
			}
			log.Fatalf("connection lost: %v", err)
		}
		fmt.Println("frame:", msg)
		var ev struct {
			Type, GatewayID, UserID string
			Payload                 struct {
				APIID           string `json:"apiId"`
				DeploymentID    string `json:"deploymentId"`
				PerformedAt     string `json:"performedAt"`
				Name            string `json:"name"`
				KeyName         string `json:"keyName"`
				APIKeyHashes    string `json:"apiKeyHashes"`
				ApplicationUUID string `json:"applicationUuid"`
				Mappings        []struct {
					APIKeyUUID string `json:"apiKeyUuid"`
				} `json:"mappings"`
			}
		}
		json.Unmarshal([]byte(msg), &ev)
		switch {
		case ev.Type == "connection.ack" && g.gen == 2:
			g.postManifest(ev.GatewayID)
			g.pullKeys()
		case strings.HasPrefix(ev.Type, "apikey.") && g.gen == 2:
			if _, ok := g.held[ev.Payload.APIID]; !ok {
				fmt.Println("  (a key of an API not held: dropped)")
				continue
			}
			var h struct{ SHA256 string }
			json.Unmarshal([]byte(ev.Payload.APIKeyHashes), &h)
			switch ev.Type {
			case "apikey.created":
				g.keys[ev.Payload.APIID+"/"+ev.Payload.Name] = h.SHA256
			case "apikey.updated":
				g.keys[ev.Payload.APIID+"/"+ev.Payload.KeyName] = h.SHA256
			case "apikey.revoked":
				delete(g.keys, ev.Payload.APIID+"/"+ev.Payload.KeyName)
			}
			g.printKeys()
		case ev.Type == "application.updated" && g.gen == 2:
			var ids []string
			for _, m := range ev.Payload.Mappings {
				ids = append(ids, m.APIKeyUUID)
			}
			g.apps[ev.Payload.ApplicationUUID] = ids
			fmt.Printf("  application %s maps keys %v\n", ev.Payload.ApplicationUUID, ids)
		case ev.Type == "api.deployed" && g.gen == 1:
			g.download(ev.Payload.APIID)
		case (ev.Type == "api.deployed" || ev.Type == "api.undeployed") && g.gen == 2:
			at, _ := time.Parse(time.RFC3339Nano, ev.Payload.PerformedAt)
			if held, ok := g.held[ev.Payload.APIID]; ok && !at.After(held) {
				fmt.Println("  (not newer than what is held: ignored)")
				continue
			}
			action := "undeploy"
			if ev.Type == "api.deployed" {
				action = "deploy"
				g.download(ev.Payload.APIID)
			}
			g.held[ev.Payload.APIID] = at
			g.ack(ev.Payload.DeploymentID, ev.Payload.APIID, action, ev.Payload.PerformedAt)
		case ev.Type == "api.deleted":
			delete(g.held, ev.Payload.APIID)
		}
	}
}

// pullKeys replaces the keys held with GET /apis/api-keys (generation 2,
// on every connect), before it reads the next event.
func (g *gateway) pullKeys() {
	req, _ := http.NewRequest("GET", g.base+"/api/internal/v1/apis/api-keys", nil)
	req.Header.Set("api-key", g.key)
	resp, err := g.client.Do(req)
	if err != nil {
		log.Printf("pull keys: %v", err)
		return
	}
	defer resp.Body.Close()
	var list []struct {
		Name, ArtifactUUID string
		APIKeyHashes       struct{ SHA256 string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || resp.StatusCode != 200 {
		log.Printf("pull keys: %s %v", resp.Status, err)
		return
	}
	keys := map[string]string{}
	for _, k := range list {
		keys[k.ArtifactUUID+"/"+k.Name] = k.APIKeyHashes.SHA256
	}
	g.keys = keys
	fmt.Printf("pulled %d API keys\n", len(list))
	g.printKeys()
}

// printKeys prints the keys held.
func (g *gateway) printKeys() {
	fmt.Printf("  keys held: %d\n", len(g.keys))
	for k, h := range g.keys {
		fmt.Printf("    %s sha256:%.12s…\n", k, h)
	}
}

// postManifest reports the gateway's version and policies (generation 2).
func (g *gateway) postManifest(gatewayID string) {
	body := `{"version":"1.2.0","functionalityType":"regular","policies":[{"name":"cors","version":"v1"},{"name":"api-key-auth","version":"v1"}]}`
	req, _ := http.NewRequest("POST", g.base+"/api/internal/v1/gateways/"+gatewayID+"/manifest", strings.NewReader(body))
	req.Header.Set("api-key", g.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.client.Do(req)
	if err != nil {
		log.Fatalf("manifest: %v", err)
	}
	resp.Body.Close()
	fmt.Println("manifest:", resp.Status)
}

// ack acknowledges an applied event (generation 2).
func (g *gateway) ack(deploymentID, apiID, action, performedAt string) {
	frame, _ := json.Marshal(map[string]any{"type": "deployment.ack", "payload": map[string]string{
		"deploymentId": deploymentID, "artifactId": apiID, "resourceType": "api", "action": action,
		"status": "success", "performedAt": performedAt}})
	if err := websocket.Message.Send(g.ws, string(frame)); err != nil {
		log.Fatalf("ack: %v", err)
	}
	fmt.Println("acknowledged:", action, apiID)
}

// download fetches the zip of one API and prints its YAML.
func (g *gateway) download(apiID string) {
	req, _ := http.NewRequest("GET", g.base+"/api/internal/v1/apis/"+apiID, nil)
	req.Header.Set("api-key", g.key)
	resp, err := g.client.Do(req)
	if err != nil {
		log.Printf("download: %v", err)
		return
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		log.Printf("download: %s %s", resp.Status, data)
		return
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		log.Printf("download: %v", err)
		return
	}
	for _, f := range zr.File {
		rc, _ := f.Open()
		doc, _ := io.ReadAll(rc)
		rc.Close()
		fmt.Printf("--- %s\n%s", f.Name, doc)
	}
}
