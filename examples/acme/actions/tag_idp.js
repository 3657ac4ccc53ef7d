// A ZITADEL v1 style action: function named after the action, (ctx, api).
let logger = require("zitadel/log");

function tagIdp(ctx, api) {
  let provider = ctx.v1.providerInfo ? ctx.v1.providerInfo.name : "local";
  logger.log("sign-in through " + provider);
  api.v1.user.appendMetadata("last_idp", provider);
  api.v1.claims.setClaim("idp", provider);
}
