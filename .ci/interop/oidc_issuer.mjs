// A real third-party OIDC issuer on loopback: oauth2-mock-server with an RS256 and an ES256
// key in its JWKS. Tokens come from POST /token (grant_type=client_credentials); the `scope` picks the
// claims:
//   github-actions  exactly the claim set of a GitHub Actions job's OIDC token
//   (anything else) the mock server's own claims plus a `sub`
// A code exchanged at /token (grant_type=authorization_code, after /authorize with PKCE) is a
// person signing in: sub "ines", email "ines@acme.example".
// The `aud` form field is the token's audience, as with GitHub's `audience` parameter.
//
// usage: node oidc_issuer.mjs PORT   (prints the issuer URL once listening)
import { OAuth2Server } from "oauth2-mock-server";

const port = Number(process.argv[2]);
const server = new OAuth2Server();
await server.issuer.keys.generate("RS256");
await server.issuer.keys.generate("ES256");

server.service.on("beforeTokenSigning", (token, req) => {
  const now = Math.floor(Date.now() / 1000);
  if (req.body.scope === "github-actions") {
    const repo = "acme/api";
    token.payload = {
      jti: crypto.randomUUID(),
      sub: `repo:${repo}:environment:production`,
      aud: req.body.aud,
      ref: "refs/heads/main",
      sha: "5d8f1e2a9c7b3f4e6a1d0c9b8a7f6e5d4c3b2a19",
      repository: repo,
      repository_owner: "acme",
      repository_owner_id: "5124",
      run_id: "9134577181",
      run_number: "412",
      run_attempt: "1",
      repository_visibility: "private",
      repository_id: "820004",
      actor_id: "583231",
      actor: "octocat",
      workflow: "deploy",
      head_ref: "",
      base_ref: "",
      event_name: "push",
      ref_protected: "true",
      ref_type: "branch",
      workflow_ref: `${repo}/.github/workflows/deploy.yml@refs/heads/main`,
      workflow_sha: "5d8f1e2a9c7b3f4e6a1d0c9b8a7f6e5d4c3b2a19",
      job_workflow_ref: `${repo}/.github/workflows/deploy.yml@refs/heads/main`,
      job_workflow_sha: "5d8f1e2a9c7b3f4e6a1d0c9b8a7f6e5d4c3b2a19",
      runner_environment: "github-hosted",
      environment: "production",
      iss: token.payload.iss,
      nbf: now - 5,
      exp: now + 300,
      iat: now,
    };
  } else if (req.body.grant_type === "authorization_code") {
    // A person signing in to custody's web page (ui.sh): the code flow with PKCE.
    token.payload.sub = "ines";
    token.payload.email = "ines@acme.example";
  } else {
    token.payload.sub = req.body.scope ?? "interop-client";
  }
});

await server.start(port, "127.0.0.1");
console.log(server.issuer.url);
