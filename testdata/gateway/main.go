// Command gateway is a tiny gateway for trying platform-api by hand: it
// connects to the gateway channel with a gateway token, prints every frame,
// and downloads the API of each api.deployed event. It skips certificate
// checks unless -ca is given, so it is for a laptop, not for production.
//
//	go run ./testdata/gateway -url https://localhost:8443 -key gwt_...
package main

import (
	"archive/zip"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"

	"golang.org/x/net/websocket"
)

func main() {
	base := flag.String("url", "https://localhost:8443", "platform-api base URL")
	key := flag.String("key", os.Getenv("GATEWAY_TOKEN"), "gateway token (or GATEWAY_TOKEN)")
	ca := flag.String("ca", "", "PEM file of the server certificate to trust (default: trust any)")
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
	wsURL := "wss://" + strings.TrimPrefix(*base, "https://") + "/api/internal/v1/ws/gateways/connect"
	cfg, err := websocket.NewConfig(wsURL, *base)
	if err != nil {
		log.Fatal(err)
	}
	cfg.TlsConfig = tlsCfg
	cfg.Header.Set("api-key", *key)
	ws, err := websocket.DialConfig(cfg)
	if err != nil {
		log.Fatalf("connect: %v", err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	for {
		var msg string
		if err := websocket.Message.Receive(ws, &msg); err != nil {
			log.Fatalf("connection closed: %v", err)
		}
		fmt.Println("frame:", msg)
		var ev struct {
			Type    string
			Payload struct {
				APIID string `json:"apiId"`
			}
		}
		json.Unmarshal([]byte(msg), &ev)
		if ev.Type == "api.deployed" {
			download(client, *base, *key, ev.Payload.APIID)
		}
	}
}

// download fetches the zip of one API and prints its YAML.
func download(client *http.Client, base, key, apiID string) {
	req, _ := http.NewRequest("GET", base+"/api/internal/v1/apis/"+apiID, nil)
	req.Header.Set("api-key", key)
	resp, err := client.Do(req)
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
