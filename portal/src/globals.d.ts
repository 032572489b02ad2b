/** Set by build.mjs: true only in the local build (`--local`), false in every production bundle. */
declare const __LOCAL_SIGN_IN__: boolean;
