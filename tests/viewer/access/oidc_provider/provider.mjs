// A real OpenID Provider for the tests: node provider.mjs CONFIG.json
// CONFIG: {"port": N, "client": {client_id, client_secret, redirect_uris}, "accounts": {login: claims}}
// The accounts are read again at each sign-in, so that a test can change someone's groups.
// The development interactions (a login form taking any password, then a consent form) stand in for a
// hospital's login page; everything after them (authorization code, PKCE, tokens, ID token signatures,
// userinfo) is the provider's own.
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${config.port}`;

const provider = new Provider(issuer, {
  clients: [{ ...config.client, grant_types: ['authorization_code'], response_types: ['code'] }],
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email'],
    groups: ['groups'],
  },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['a test key, not a secret'] },
  async findAccount(ctx, id) {
    const claims = JSON.parse(readFileSync(process.argv[2], 'utf8')).accounts[id];
    if (!claims) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...claims }; } };
  },
});

provider.listen(config.port, '127.0.0.1', () => {
  console.log(`listening ${issuer}`);
});
