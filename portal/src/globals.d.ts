/** Set by build.mjs: true only in the local build (`--local`), false in every production bundle. */
declare const __LOCAL_SIGN_IN__: boolean;
/** Set by build.mjs: the path of the QR decoder's WebAssembly file (content-hashed). */
declare const __ZXING_WASM__: string;
