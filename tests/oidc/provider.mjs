// A real OpenID Connect provider on loopback for the console's sign-in tests:
// node provider.mjs <port> <client_id> <redirect_uri> <accounts JSON>
// Accounts: {"<login>": {"preferred_username": "...", "gatehook_roles": {...}}}. The provider's
// own development sign-in pages take any password for a login listed there. Public client,
// authorization code with PKCE (S256, required by the provider).
import Provider from 'oidc-provider';

const [port, clientId, redirectUri, accountsJson] = process.argv.slice(2);
const accounts = JSON.parse(accountsJson);
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    token_endpoint_auth_method: 'none',
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  claims: { openid: ['sub'], profile: ['preferred_username', 'name', 'gatehook_roles'] },
  conformIdTokenClaims: false, // scope claims in the ID token itself
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    const account = accounts[id];
    if (!account) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...account }; } };
  },
});
provider.proxy = false;
provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`oidc provider ${issuer}`);
});
