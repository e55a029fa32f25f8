// The OpenID provider the single sign-on tests sign in with: the
// `oidc-provider` package (OpenID Certified), its development login form,
// one confidential client (kbastion), and the people and groups the test
// passes in. Started by tests/e2e_sso.rs as
//   node provider.mjs PORT CONFIG.json
// where CONFIG.json holds {client_id, client_secret, redirect_uri,
// accounts: {login: {groups: [...]}}, id_token_ttl}.
//
// For the tampering tests, POST /test/tamper with one of `other-key`,
// `expired`, `other-audience` or `none` makes the token endpoint answer
// with an ID token changed that way, as a compromised or misconfigured
// provider would; `rotated` rotates its signing key (the new one is
// published in its JWKS too). POST /test/id-token-ttl
// with a number of seconds makes the provider's ID tokens that short;
// POST /test/refresh-tokens `on` gives sign-ins refresh tokens; POST
// /test/remove-account LOGIN removes an account (a leaver).
import fs from 'node:fs';
import Provider from 'oidc-provider';
import * as jose from 'jose';

const [port, configPath] = process.argv.slice(2);
const config = JSON.parse(fs.readFileSync(configPath, 'utf8'));
const issuer = `http://127.0.0.1:${port}`;
let idTokenTtl = config.id_token_ttl || 3600;
// Whether sign-ins get refresh tokens (as Keycloak's do by default).
let refreshTokens = false;

// The provider's signing key, ours so the tampering below can sign with
// it too (only what it changes differs), and a key of nobody's.
const providerKey = await jose.generateKeyPair('RS256', { extractable: true });
const providerJwk = {
  ...(await jose.exportJWK(providerKey.privateKey)),
  kid: 'provider-1',
  use: 'sig',
  alg: 'RS256',
};
const otherKey = await jose.generateKeyPair('RS256');
// The key the provider rotates to (`rotated`): published beside the first
// in its JWKS, and signing its ID tokens from then on.
const nextKey = await jose.generateKeyPair('RS256', { extractable: true });
const nextJwk = {
  ...(await jose.exportJWK(nextKey.publicKey)),
  kid: 'provider-2',
  use: 'sig',
  alg: 'RS256',
};

const provider = new Provider(issuer, {
  clients: [{
    client_id: config.client_id,
    client_secret: config.client_secret,
    redirect_uris: [config.redirect_uri],
    response_types: ['code'],
    grant_types: ['authorization_code', 'refresh_token'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [providerJwk] },
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'groups', 'offline_access'],
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    groups: ['groups'],
  },
  // The claims of the scopes asked for go in the ID token itself (not
  // only in userinfo), as Keycloak, Dex and Okta's group claims do.
  conformIdTokenClaims: false,
  ttl: { IdToken: () => idTokenTtl },
  issueRefreshToken: async (ctx, client) => refreshTokens && client.grantTypeAllowed('refresh_token'),
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    const account = config.accounts[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: account.sub || `sub-${id}`,
          preferred_username: account.username || id,
          name: id,
          groups: account.groups || [],
        };
      },
    };
  },
  // kbastion is the company's own client: no consent screen.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid profile groups offline_access');
    await grant.save();
    return grant;
  },
});

let tamper = 'none';

provider.use(async (ctx, next) => {
  if (ctx.path.startsWith('/test/') && ctx.method === 'POST') {
    let body = '';
    for await (const chunk of ctx.req) body += chunk;
    if (ctx.path === '/test/tamper') tamper = body.trim();
    if (ctx.path === '/test/id-token-ttl') idTokenTtl = Number(body.trim());
    if (ctx.path === '/test/refresh-tokens') refreshTokens = body.trim() === 'on';
    // A leaver: the account is gone, and renewing its sign-in fails.
    if (ctx.path === '/test/remove-account') delete config.accounts[body.trim()];
    ctx.body = `${ctx.path}: ${body.trim()}\n`;
    return;
  }
  await next();
  if (ctx.path === '/jwks' && tamper === 'rotated' && ctx.body && ctx.body.keys) {
    ctx.body = { keys: [...ctx.body.keys, nextJwk] };
  }
  if (ctx.path === '/token' && tamper !== 'none' && ctx.body && ctx.body.id_token) {
    const claims = jose.decodeJwt(ctx.body.id_token);
    const now = Math.floor(Date.now() / 1000);
    if (tamper === 'expired') {
      claims.iat = now - 7200;
      claims.exp = now - 3600;
    }
    if (tamper === 'other-audience') claims.aud = 'someone-else';
    // `other-key`: the same claims under the provider's key ID, signed
    // by another key; `rotated`: signed by the key rotated to; the rest:
    // signed by the provider's own key.
    const [key, kid] = {
      'other-key': [otherKey, 'provider-1'],
      rotated: [nextKey, 'provider-2'],
    }[tamper] || [providerKey, 'provider-1'];
    ctx.body = {
      ...ctx.body,
      id_token: await new jose.SignJWT(claims)
        .setProtectedHeader({ alg: 'RS256', kid })
        .sign(key.privateKey),
    };
  }
});

provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`oidc provider ready at ${issuer}`);
});
