// Local OpenID Connect identity provider for migrate-hub development and tests.
//
// Built on oidc-provider (a certified OpenID Provider). Everything lives in memory:
// signing keys, cookie keys, sessions and grants are new on every start.
// Never expose this server beyond loopback: every account's password is "demo".
//
// See README.md in this folder for the accounts, the environment variables and the
// login form contract.

import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { renameSync, rmSync, writeFileSync } from 'node:fs';

import Provider, { errors } from 'oidc-provider';

const HOST = '127.0.0.1';
const DEMO_PASSWORD = 'demo';
const MAX_FORM_BYTES = 16 * 1024;

// ---------------------------------------------------------------------------
// Configuration from the environment
// ---------------------------------------------------------------------------

function envList(name, fallback) {
  const raw = process.env[name];
  const list = (raw === undefined || raw.trim() === '' ? fallback : raw)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return list;
}

const portEnv = process.env.MH_IDP_PORT?.trim() || '0';
const PORT = Number.parseInt(portEnv, 10);
if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535 || String(PORT) !== portEnv) {
  console.error(`dev-idp: MH_IDP_PORT must be a port number (0 = any free port), got "${portEnv}"`);
  process.exit(2);
}

const CLIENT_ID = process.env.MH_IDP_CLIENT_ID?.trim() || 'migrate-hub-dev';
const CLIENT_SECRET = process.env.MH_IDP_CLIENT_SECRET?.trim() || 'dev-secret';
const REDIRECT_URIS = envList('MH_IDP_REDIRECT_URIS', 'http://127.0.0.1:8080/auth/callback');

for (const uri of REDIRECT_URIS) {
  try {
    new URL(uri); // eslint-disable-line no-new
  } catch {
    console.error(`dev-idp: MH_IDP_REDIRECT_URIS contains an invalid URL: "${uri}"`);
    process.exit(2);
  }
}

// Origins of the redirect URIs: allowed for CORS and, by default, as post-logout targets.
const CLIENT_ORIGINS = [...new Set(REDIRECT_URIS.map((uri) => new URL(uri).origin))];
const POST_LOGOUT_REDIRECT_URIS = envList(
  'MH_IDP_POST_LOGOUT_REDIRECT_URIS',
  CLIENT_ORIGINS.map((origin) => `${origin}/`).join(','),
);

// ---------------------------------------------------------------------------
// Demo accounts
// ---------------------------------------------------------------------------

const ACCOUNT_LIST = [
  { sub: 'dev-admin', email: 'admin@example.com', name: 'Ada Admin', email_verified: true, hd: 'example.com' },
  { sub: 'dev-manager', email: 'manager@example.com', name: 'Max Manager', email_verified: true, hd: 'example.com' },
  { sub: 'dev-manager2', email: 'manager2@example.com', name: 'Mia Manager', email_verified: true, hd: 'example.com' },
  { sub: 'dev-user', email: 'user@example.com', name: 'Uma User', email_verified: true, hd: 'example.com' },
  { sub: 'dev-unverified', email: 'unverified@example.com', name: 'Una Verified', email_verified: false, hd: 'example.com' },
  { sub: 'dev-outsider', email: 'outsider@foreign.test', name: 'Otto Outsider', email_verified: true },
];

const ACCOUNTS_BY_SUB = new Map(ACCOUNT_LIST.map((a) => [a.sub, a]));
const ACCOUNTS_BY_EMAIL = new Map(ACCOUNT_LIST.map((a) => [a.email, a]));

async function findAccount(_ctx, sub) {
  const account = ACCOUNTS_BY_SUB.get(sub);
  if (!account) return undefined;
  return {
    accountId: account.sub,
    async claims() {
      const claims = {
        sub: account.sub,
        email: account.email,
        email_verified: account.email_verified,
        name: account.name,
      };
      if (account.hd) claims.hd = account.hd;
      return claims;
    },
  };
}

// ---------------------------------------------------------------------------
// HTML
// ---------------------------------------------------------------------------

function esc(value) {
  return String(value ?? '')
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
<style>
body{font-family:system-ui,sans-serif;max-width:30rem;margin:2rem auto;padding:0 1rem}
label{display:block;margin:.75rem 0}input{display:block;width:100%;padding:.4rem;box-sizing:border-box}
button{padding:.4rem 1rem;margin-top:.5rem}.error{color:#b00020;font-weight:600}
table{border-collapse:collapse;font-size:.85rem}td,th{padding:.15rem .5rem;text-align:left}
</style>
</head>
<body>
${body}
</body>
</html>
`;
}

function loginPage({ uid, clientId, login = '', error }) {
  const rows = ACCOUNT_LIST.map((a) => `<tr><td>${esc(a.email)}</td><td>${esc(a.name)}</td>`
    + `<td>${a.email_verified ? 'yes' : 'no'}</td><td>${esc(a.hd ?? '')}</td></tr>`).join('\n');
  const action = `/interaction/${encodeURIComponent(uid)}/login`;
  const abort = `/interaction/${encodeURIComponent(uid)}/abort`;
  return page('Sign in - migrate-hub development identity provider', `
<h1>Sign in</h1>
<p>Development identity provider for <code>${esc(clientId)}</code>.</p>
${error ? `<p class="error" id="login-error" role="alert">${esc(error)}</p>` : ''}
<form id="login-form" method="post" action="${esc(action)}" autocomplete="off">
<label>E-mail <input type="text" inputmode="email" name="login" id="login" value="${esc(login)}" required autofocus></label>
<label>Password <input type="password" name="password" id="password" required></label>
<button type="submit" id="sign-in">Sign in</button>
</form>
<form id="abort-form" method="post" action="${esc(abort)}">
<button type="submit" id="cancel">Cancel</button>
</form>
<details>
<summary>Demo accounts (password <code>${DEMO_PASSWORD}</code>)</summary>
<table>
<tr><th>E-mail</th><th>Name</th><th>Verified</th><th>hd</th></tr>
${rows}
</table>
</details>`);
}

function errorPage(title, message) {
  return page(title, `<h1>${esc(title)}</h1>\n<p class="error" role="alert">${esc(message)}</p>`);
}

function sendHtml(res, status, html) {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('X-Frame-Options', 'DENY');
  res.setHeader('Content-Length', Buffer.byteLength(html));
  res.end(html);
}

// ---------------------------------------------------------------------------
// Interactions (login form, automatic consent)
// ---------------------------------------------------------------------------

async function readForm(req) {
  const type = (req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') {
    const err = new Error('expected an application/x-www-form-urlencoded body');
    err.status = 415;
    throw err;
  }
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_FORM_BYTES) {
      const err = new Error('form body too large');
      err.status = 413;
      throw err;
    }
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// Grants everything the authorization request asked for: the dev provider never shows a
// consent screen.
async function grantAll(provider, details, accountId) {
  const { params, prompt } = details;
  let grant;
  if (details.grantId) {
    grant = await provider.Grant.find(details.grantId);
    if (grant && grant.accountId !== accountId) grant = undefined;
  }
  if (!grant) {
    grant = new provider.Grant({ accountId, clientId: params.client_id });
  }

  if (params.scope) grant.addOIDCScope(params.scope);

  const missingScope = prompt.details?.missingOIDCScope;
  if (missingScope?.length) grant.addOIDCScope(missingScope.join(' '));

  const missingClaims = prompt.details?.missingOIDCClaims;
  if (missingClaims?.length) grant.addOIDCClaims(missingClaims);

  if (params.claims) {
    try {
      const requested = JSON.parse(params.claims);
      const names = new Set([
        ...Object.keys(requested.id_token ?? {}),
        ...Object.keys(requested.userinfo ?? {}),
      ]);
      if (names.size) grant.addOIDCClaims([...names]);
    } catch {
      // malformed claims parameters are rejected by the provider before an interaction starts
    }
  }

  const missingResourceScopes = prompt.details?.missingResourceScopes;
  if (missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }

  return grant.save();
}

async function handleInteraction(provider, req, res, uid, action) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    if (err instanceof errors.SessionNotFound) {
      sendHtml(res, 400, errorPage(
        'Sign-in request not found',
        'The sign-in request has expired or its cookie is missing. Start the sign-in again from the application.',
      ));
      return;
    }
    throw err;
  }

  if (details.uid !== uid) {
    sendHtml(res, 400, errorPage('Sign-in request mismatch', 'This form does not belong to the current sign-in request.'));
    return;
  }

  const { prompt, params } = details;

  if (req.method === 'GET' && action === '') {
    if (prompt.name === 'login') {
      sendHtml(res, 200, loginPage({ uid, clientId: params.client_id }));
      return;
    }
    if (prompt.name === 'consent') {
      const grantId = await grantAll(provider, details, details.session?.accountId);
      await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
      return;
    }
    sendHtml(res, 400, errorPage('Unsupported prompt', `The prompt "${prompt.name}" is not supported.`));
    return;
  }

  if (req.method === 'POST' && action === 'abort') {
    await provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
    return;
  }

  if (req.method === 'POST' && (action === 'login' || action === '')) {
    let form;
    try {
      form = await readForm(req);
    } catch (err) {
      sendHtml(res, err.status || 400, errorPage('Bad request', err.message));
      return;
    }

    if (prompt.name !== 'login') {
      sendHtml(res, 400, errorPage('Unexpected sign-in step', `The current step is "${prompt.name}", not a login.`));
      return;
    }

    const login = (form.get('login') || '').trim();
    const password = form.get('password') || '';
    const account = ACCOUNTS_BY_EMAIL.get(login.toLowerCase());

    if (!account || password !== DEMO_PASSWORD) {
      sendHtml(res, 401, loginPage({
        uid,
        clientId: params.client_id,
        login,
        error: 'Invalid e-mail or password.',
      }));
      return;
    }

    const grantId = await grantAll(provider, details, account.sub);
    await provider.interactionFinished(req, res, {
      login: { accountId: account.sub, amr: ['pwd'] },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
    return;
  }

  res.setHeader('Allow', action === '' ? 'GET, POST' : 'POST');
  sendHtml(res, 405, errorPage('Method not allowed', `${req.method} is not allowed here.`));
}

// ---------------------------------------------------------------------------
// Provider
// ---------------------------------------------------------------------------

function signingKeys() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return {
    keys: [{
      ...jwk,
      kid: `dev-${randomBytes(6).toString('hex')}`,
      alg: 'RS256',
      use: 'sig',
    }],
  };
}

function buildProvider(issuer) {
  const allowedOrigins = new Set(CLIENT_ORIGINS);

  const configuration = {
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      client_name: 'migrate-hub (development)',
      redirect_uris: REDIRECT_URIS,
      post_logout_redirect_uris: POST_LOGOUT_REDIRECT_URIS,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      // client_secret_post is accepted too: oidc-provider treats the two as interchangeable.
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'RS256',
    }],
    clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
    jwks: signingKeys(),
    cookies: {
      keys: [randomBytes(32).toString('base64url')],
    },
    findAccount,
    scopes: ['openid', 'email', 'profile'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified', 'hd'],
      profile: ['name'],
    },
    // Put the scope claims into the ID token too (like Google does), not only into userinfo.
    conformIdTokenClaims: false,
    responseTypes: ['code'],
    pkce: {
      required: () => true,
    },
    clientBasedCORS: (_ctx, origin) => allowedOrigins.has(origin),
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        // Confirms the logout without asking: a browser submits the form by script, an
        // HTTP client posts the form (hidden fields xsrf and logout=yes) itself.
        async logoutSource(ctx, form) {
          const autoForm = form.replace('</form>', '<input type="hidden" name="logout" value="yes"/></form>');
          ctx.type = 'html';
          ctx.body = page('Signing out', `
<h1>Signing out</h1>
${autoForm}
<button type="submit" form="op.logoutForm" id="sign-out">Sign out</button>
<script>document.forms[0].submit()</script>`);
        },
        async postLogoutSuccessSource(ctx) {
          ctx.type = 'html';
          ctx.body = page('Signed out', '<h1>Signed out</h1>\n<p>You have been signed out of the development identity provider.</p>');
        },
      },
    },
    interactions: {
      url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      const lines = Object.entries(out).map(([k, v]) => `<p><strong>${esc(k)}</strong>: ${esc(v)}</p>`).join('\n');
      ctx.body = page('Identity provider error', `<h1>Identity provider error</h1>\n${lines}`);
    },
    ttl: {
      AccessToken: 10 * 60,
      AuthorizationCode: 60,
      IdToken: 10 * 60,
      Interaction: 10 * 60,
      Session: 60 * 60,
      Grant: 60 * 60,
    },
  };

  const provider = new Provider(issuer, configuration);
  provider.on('server_error', (_ctx, err) => {
    console.error('dev-idp: server error:', err);
  });
  return provider;
}

// ---------------------------------------------------------------------------
// HTTP server
// ---------------------------------------------------------------------------

const READY_FILE = process.env.MH_IDP_READY_FILE || '';
if (READY_FILE) {
  // A file left by an earlier run must not announce this one before it listens.
  rmSync(READY_FILE, { force: true });
}

const INTERACTION_PATH = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|abort))?\/?$/;

let providerHandler;
let provider;

const server = createServer((req, res) => {
  const { pathname } = new URL(req.url, 'http://localhost');
  const match = INTERACTION_PATH.exec(pathname);
  if (!providerHandler) {
    sendHtml(res, 503, errorPage('Starting', 'The identity provider is still starting.'));
    return;
  }
  if (!match) {
    providerHandler(req, res);
    return;
  }
  handleInteraction(provider, req, res, match[1], match[2] ?? '').catch((err) => {
    console.error('dev-idp: interaction error:', err);
    if (!res.headersSent) {
      sendHtml(res, 500, errorPage('Internal error', 'The identity provider failed to handle this request.'));
    } else {
      res.destroy();
    }
  });
});

server.on('error', (err) => {
  console.error(`dev-idp: cannot listen on ${HOST}:${PORT}: ${err.message}`);
  process.exit(1);
});

server.listen(PORT, HOST, () => {
  const { port } = server.address();
  const issuer = `http://${HOST}:${port}`;
  provider = buildProvider(issuer);
  providerHandler = provider.callback();

  const line = `MH_IDP_ISSUER=${issuer}`;
  if (READY_FILE) {
    // Write atomically so that a poller never reads a partial line.
    const tmp = `${READY_FILE}.${process.pid}.tmp`;
    writeFileSync(tmp, `${line}\n`);
    renameSync(tmp, READY_FILE);
  }
  process.stdout.write(`${line}\n`);
});

function shutdown(signal) {
  console.error(`dev-idp: ${signal} received, exiting`);
  if (READY_FILE) rmSync(READY_FILE, { force: true });
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}

process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
