// Command flux-fixtures serves, on loopback only, what Flux's source-controller fetches in the
// test rig: a Helm chart repository over HTTP and Git repositories over smart HTTP.
//
//	flux-fixtures [-listen 127.0.0.1:0] [-helm helm] [-branch main] [-work DIR]
//	              [-chart DIR]... [-git NAME=DIR]...
//
// Every -chart directory is packaged with the rig's helm binary ("helm package") into the served
// directory, which is then indexed ("helm repo index"). Every -git NAME=DIR becomes the
// repository NAME.git with one commit holding DIR's files on the branch -branch. NAME may have
// several path segments (acme/shop), as repositories of a Git host do.
//
// What it serves is printed on stdout as JSON lines, one object per line with a "kind":
//
//	{"kind":"helm-repository","url":"http://127.0.0.1:P/"}
//	{"kind":"chart","name":"demo","version":"0.1.0","url":"http://127.0.0.1:P/demo-0.1.0.tgz","digest":"…"}
//	{"kind":"git-server","url":"http://127.0.0.1:Q"}
//	{"kind":"git-repository","name":"demo","url":"http://127.0.0.1:Q/demo.git","branch":"main","commit":"<sha>"}
//	{"kind":"control","url":"http://127.0.0.1:P/-/"}
//	{"kind":"ready"}
//
// "ready" comes last, once everything above is served. While it runs, a test changes the
// fixtures through the control URL (each answer is the same JSON line, also printed on stdout):
//
//	POST /-/commit?repo=NAME&dir=[PREFIX=]DIR...[&message=TEXT][&shortsha=digits]
//	    a new commit on top of the branch whose tree is exactly the files of the directories
//	    (each under PREFIX when given, e.g. dir=charts/demo=/abs/demo; creates NAME.git);
//	    with shortsha=digits, followed by empty commits until the head's first 7 characters
//	    are digits (YAML reads such a short sha as a number)
//	POST /-/file?repo=NAME&path=PATH[&message=TEXT]  (body: the file's new content)
//	    a new commit on top of the branch that writes one file and keeps every other
//	POST /-/chart?dir=DIR
//	    package DIR into the repository, re-index
//
// It stops on SIGINT or SIGTERM and removes its work directory unless -work was given.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fluxcd/pkg/gittestserver"
	"github.com/go-git/go-billy/v5/memfs"
	"github.com/go-git/go-billy/v5/osfs"
	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"sigs.k8s.io/yaml"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// One or more path segments (acme/shop, group/sub/project), none of them "." or "..".
var repoName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$`)

// mount is a directory whose files go under prefix in a commit's tree.
type mount struct {
	prefix string
	dir    string
}

// parseMount reads "DIR" or "PREFIX=DIR"; DIR must be absolute, PREFIX relative and inside the
// repository.
func parseMount(v string) (mount, error) {
	m := mount{dir: v}
	if !strings.HasPrefix(v, "/") {
		prefix, dir, ok := strings.Cut(v, "=")
		if !ok {
			return m, fmt.Errorf("dir %q: want an absolute directory or PREFIX=/absolute/directory", v)
		}
		m = mount{prefix: path.Clean(prefix), dir: dir}
		if m.prefix == "." || strings.HasPrefix(m.prefix, "/") || m.prefix == ".." || strings.HasPrefix(m.prefix, "../") {
			return m, fmt.Errorf("dir %q: the prefix must be a relative path inside the repository", v)
		}
	}
	if !filepath.IsAbs(m.dir) {
		return m, fmt.Errorf("dir %q: the directory must be absolute", v)
	}
	return m, nil
}

type fixtures struct {
	mu        sync.Mutex
	out       *json.Encoder
	helm      string
	branch    string
	chartsDir string
	chartsURL string
	helmHome  string
	git       *gittestserver.GitServer
}

func (f *fixtures) emit(v map[string]any) {
	if err := f.out.Encode(v); err != nil {
		log.Printf("writing stdout: %v", err)
	}
}

func (f *fixtures) run(args ...string) ([]byte, error) {
	cmd := exec.Command(f.helm, args...)
	// Its own helm home: nothing of the user's helm configuration or cache is read or written.
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(f.helmHome, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(f.helmHome, "config"),
		"HELM_DATA_HOME="+filepath.Join(f.helmHome, "data"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s: %v: %s", f.helm, strings.Join(args, " "), err, out)
	}
	return out, nil
}

// addChart packages dir and rebuilds index.yaml; it returns the chart's index entry.
func (f *fixtures) addChart(dir string) (map[string]any, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out, err := f.run("package", dir, "--destination", f.chartsDir)
	if err != nil {
		return nil, err
	}
	// "Successfully packaged chart and saved it to: /path/demo-0.1.0.tgz"
	line := strings.TrimSpace(string(out))
	tgz := filepath.Base(line[strings.LastIndex(line, " ")+1:])
	if _, err := f.run("repo", "index", f.chartsDir, "--url", f.chartsURL); err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(filepath.Join(f.chartsDir, "index.yaml"))
	if err != nil {
		return nil, err
	}
	var index struct {
		Entries map[string][]struct {
			Name    string   `json:"name"`
			Version string   `json:"version"`
			Digest  string   `json:"digest"`
			URLs    []string `json:"urls"`
		} `json:"entries"`
	}
	if err := yaml.Unmarshal(raw, &index); err != nil {
		return nil, fmt.Errorf("reading index.yaml: %w", err)
	}
	for _, versions := range index.Entries {
		for _, v := range versions {
			if len(v.URLs) == 1 && strings.HasSuffix(v.URLs[0], "/"+tgz) {
				return map[string]any{"kind": "chart", "name": v.Name, "version": v.Version,
					"url": v.URLs[0], "digest": v.Digest}, nil
			}
		}
	}
	return nil, fmt.Errorf("%s is not in index.yaml", tgz)
}

// open opens NAME.git (created if missing when create is set) with a scratch work tree in
// memory, its index rebuilt from the branch so that staging compares against the branch.
// checkout also writes the branch's files into the work tree.
func (f *fixtures) open(name string, create, checkout bool) (*gogit.Repository, *gogit.Worktree, error) {
	if !repoName.MatchString(name) || strings.HasSuffix(name, ".git") {
		return nil, nil, fmt.Errorf("repository name %q: want path segments of lower-case letters, digits, '.', '_', '-' and no .git suffix", name)
	}
	bare := filepath.Join(f.git.Root(), filepath.FromSlash(name)+".git")
	if _, err := os.Stat(bare); errors.Is(err, fs.ErrNotExist) {
		if !create {
			return nil, nil, fmt.Errorf("repository %s does not exist", name)
		}
		_, err := gogit.PlainInitWithOptions(bare, &gogit.PlainInitOptions{
			Bare:        true,
			InitOptions: gogit.InitOptions{DefaultBranch: plumbing.NewBranchReferenceName(f.branch)},
		})
		if err != nil {
			return nil, nil, fmt.Errorf("creating %s: %w", bare, err)
		}
	}
	storage := filesystem.NewStorage(osfs.New(bare), cache.NewObjectLRUDefault())
	repo, err := gogit.Open(storage, memfs.New())
	if err != nil {
		return nil, nil, err
	}
	w, err := repo.Worktree()
	if err != nil {
		return nil, nil, err
	}
	// The index of a bare repository may be stale or absent; rebuild it from HEAD first.
	if head, err := repo.Head(); err == nil {
		mode := gogit.MixedReset
		if checkout {
			mode = gogit.HardReset
		}
		if err := w.Reset(&gogit.ResetOptions{Commit: head.Hash(), Mode: mode}); err != nil {
			return nil, nil, fmt.Errorf("reading the branch: %w", err)
		}
	} else if !create {
		return nil, nil, fmt.Errorf("repository %s has no commit on %s: %w", name, f.branch, err)
	}
	return repo, w, nil
}

// writeFile writes one file of the scratch work tree.
func writeFile(w *gogit.Worktree, name string, mode fs.FileMode, src io.Reader) error {
	dst, err := w.Filesystem.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}

// record commits what is staged and answers the repository's JSON line.
func (f *fixtures) record(name string, w *gogit.Worktree, message string) (map[string]any, error) {
	sig := &object.Signature{Name: "preview-operator rig", Email: "rig@preview.invalid", When: time.Now()}
	sha, err := w.Commit(message, &gogit.CommitOptions{Author: sig, Committer: sig, AllowEmptyCommits: true})
	if err != nil {
		return nil, fmt.Errorf("committing: %w", err)
	}
	return map[string]any{"kind": "git-repository", "name": name,
		"url": f.git.HTTPAddress() + "/" + name + ".git", "branch": f.branch, "commit": sha.String()}, nil
}

// commit makes a commit on top of the branch of NAME.git (created if missing) whose tree is
// exactly the regular files under the mounts' directories, and returns its sha.
func (f *fixtures) commit(name string, mounts []mount, message string, digits bool) (map[string]any, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, w, err := f.open(name, true, false)
	if err != nil {
		return nil, err
	}
	// The scratch work tree holds only the mounts' files: "add --all" then stages additions,
	// changes and deletions against the branch.
	for _, m := range mounts {
		err := filepath.WalkDir(m.dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(m.dir, p)
			if err != nil {
				return err
			}
			if d.IsDir() {
				if d.Name() == ".git" && rel != "." {
					return filepath.SkipDir
				}
				return nil
			}
			if !d.Type().IsRegular() {
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			defer src.Close()
			return writeFile(w, path.Join(m.prefix, filepath.ToSlash(rel)), info.Mode().Perm(), src)
		})
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", m.dir, err)
		}
	}
	if err := w.AddWithOptions(&gogit.AddOptions{All: true}); err != nil {
		return nil, fmt.Errorf("staging: %w", err)
	}
	if message == "" {
		var dirs []string
		for _, m := range mounts {
			dirs = append(dirs, filepath.Base(m.dir))
		}
		message = "fixtures from " + strings.Join(dirs, ", ")
	}
	res, err := f.record(name, w, message)
	// About one commit in 27 has a short sha of digits; 2000 tries miss with odds of 1e-33.
	for i := 0; digits && err == nil && !shortShaOfDigits(res["commit"].(string)); i++ {
		if i == 2000 {
			return nil, fmt.Errorf("no short sha of digits after %d commits", i)
		}
		res, err = f.record(name, w, fmt.Sprintf("for a short sha of digits (%d)", i+1))
	}
	return res, err
}

func shortShaOfDigits(sha string) bool {
	if len(sha) < 7 {
		return false
	}
	for _, c := range sha[:7] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// editFile makes a commit on top of the branch of NAME.git that writes the file at rel (a
// path inside the repository) and keeps every other file, and returns its sha.
func (f *fixtures) editFile(name, rel string, content io.Reader, message string) (map[string]any, error) {
	clean := path.Clean(rel)
	if rel == "" || clean == "." || strings.HasPrefix(clean, "/") || clean == ".." || strings.HasPrefix(clean, "../") {
		return nil, fmt.Errorf("path %q: want a file path inside the repository", rel)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	_, w, err := f.open(name, false, true)
	if err != nil {
		return nil, err
	}
	if err := writeFile(w, clean, 0o644, content); err != nil {
		return nil, fmt.Errorf("writing %s: %w", clean, err)
	}
	if _, err := w.Add(clean); err != nil {
		return nil, fmt.Errorf("staging %s: %w", clean, err)
	}
	if message == "" {
		message = "change " + clean
	}
	return f.record(name, w, message)
}

func (f *fixtures) control(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	q := r.URL.Query()
	var res map[string]any
	var err error
	switch r.URL.Path {
	case "/-/commit":
		var mounts []mount
		for _, v := range q["dir"] {
			m, err := parseMount(v)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			mounts = append(mounts, m)
		}
		if len(mounts) == 0 {
			http.Error(w, "dir: at least one directory is required", http.StatusBadRequest)
			return
		}
		res, err = f.commit(q.Get("repo"), mounts, q.Get("message"), q.Get("shortsha") == "digits")
	case "/-/file":
		res, err = f.editFile(q.Get("repo"), q.Get("path"), http.MaxBytesReader(w, r.Body, 1<<20), q.Get("message"))
	case "/-/chart":
		dir := q.Get("dir")
		if dir == "" || !filepath.IsAbs(dir) {
			http.Error(w, "dir: an absolute directory path is required", http.StatusBadRequest)
			return
		}
		res, err = f.addChart(dir)
	default:
		http.NotFound(w, r)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.emit(res)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(res)
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("flux-fixtures: ")
	listen := flag.String("listen", "127.0.0.1:0", "address of the Helm repository and control endpoints (loopback)")
	helm := flag.String("helm", "helm", "the helm binary that packages and indexes charts")
	branch := flag.String("branch", "main", "the branch of every Git repository")
	work := flag.String("work", "", "where served files and repositories live (default: a temporary directory, removed at exit)")
	var charts, repos listFlag
	flag.Var(&charts, "chart", "chart directory to package and serve (repeatable)")
	flag.Var(&repos, "git", "NAME=DIR: serve NAME.git with one commit of DIR's files (repeatable)")
	flag.Parse()

	root := *work
	if root == "" {
		tmp, err := os.MkdirTemp("", "flux-fixtures-")
		if err != nil {
			log.Fatal(err)
		}
		root = tmp
		defer os.RemoveAll(tmp)
	}
	if err := run(root, *listen, *helm, *branch, charts, repos); err != nil {
		log.Print(err)
		if *work == "" {
			os.RemoveAll(root)
		}
		os.Exit(1)
	}
}

func run(root, listen, helm, branch string, charts, repos []string) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("-listen %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-listen %q: only loopback addresses are allowed", listen)
	}
	if helm, err = exec.LookPath(helm); err != nil {
		return err
	}
	f := &fixtures{out: json.NewEncoder(os.Stdout), helm: helm, branch: branch,
		chartsDir: filepath.Join(root, "charts"), helmHome: filepath.Join(root, "helm")}
	gitRoot := filepath.Join(root, "git")
	for _, d := range []string{f.chartsDir, gitRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	base := "http://" + ln.Addr().String()
	f.chartsURL = base + "/"
	mux := http.NewServeMux()
	mux.HandleFunc("/-/", f.control)
	mux.Handle("/", http.FileServer(http.Dir(f.chartsDir)))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Fatal(err)
		}
	}()
	defer srv.Close()

	// gittestserver listens on 127.0.0.1 and a free port (net/http/httptest); it answers Git's
	// smart HTTP protocol by running the machine's git (upload-pack, receive-pack).
	f.git = gittestserver.NewGitServer(gitRoot)
	if err := f.git.StartHTTP(); err != nil {
		return fmt.Errorf("starting the git server: %w", err)
	}
	defer f.git.StopHTTP()

	var lines []map[string]any
	for _, dir := range charts {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return err
		}
		line, err := f.addChart(abs)
		if err != nil {
			return err
		}
		lines = append(lines, line)
	}
	if len(charts) == 0 {
		// An empty but valid repository, so a HelmRepository can be pointed at it at once.
		if _, err := f.run("repo", "index", f.chartsDir, "--url", f.chartsURL); err != nil {
			return err
		}
	}
	sort.SliceStable(repos, func(i, j int) bool { return repos[i] < repos[j] })
	for _, spec := range repos {
		name, dir, ok := strings.Cut(spec, "=")
		if !ok {
			return fmt.Errorf("-git %q: want NAME=DIR", spec)
		}
		abs, err := filepath.Abs(dir)
		if err != nil {
			return err
		}
		line, err := f.commit(name, []mount{{dir: abs}}, "", false)
		if err != nil {
			return fmt.Errorf("-git %s: %w", spec, err)
		}
		lines = append(lines, line)
	}

	f.emit(map[string]any{"kind": "helm-repository", "url": f.chartsURL})
	f.emit(map[string]any{"kind": "git-server", "url": f.git.HTTPAddress()})
	f.emit(map[string]any{"kind": "control", "url": base + "/-/"})
	for _, l := range lines {
		f.emit(l)
	}
	f.emit(map[string]any{"kind": "ready"})

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	return nil
}
