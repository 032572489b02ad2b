// QR codes. The content format (docs/portal.md): a URL `https://<portal>/claim?code=<label code>`,
// so a phone's own camera app opens the portal with the code filled in; a plain label code is
// accepted too.

/** The label code a QR code's text carries, or undefined. */
export function codeFromQr(content: string): string | undefined {
  const text = content.trim();
  if (/^https?:\/\//i.test(text)) {
    try {
      const url = new URL(text);
      const code = url.pathname.replace(/\/+$/, "").endsWith("/claim") ? url.searchParams.get("code") : null;
      return code && /^[\x21-\x7e]{1,128}$/.test(code) ? code : undefined;
    } catch {
      return undefined;
    }
  }
  return /^[\x21-\x7e]{1,128}$/.test(text) ? text : undefined;
}

interface BarcodeDetectorLike {
  detect(source: HTMLVideoElement): Promise<{ rawValue: string }[]>;
}
type BarcodeDetectorClass = new (options: { formats: string[] }) => BarcodeDetectorLike;

/** Reads the QR codes in the video's current frame. */
type Reader = (video: HTMLVideoElement) => Promise<string[]>;

/**
 * The browser's own `BarcodeDetector` where it has one (Chrome on Android and macOS, Edge); otherwise
 * ZXing compiled to WebAssembly (`zxing-wasm`, its reader only), loaded from the portal's own origin
 * the first time someone scans, so nobody else pays for its size.
 */
async function reader(): Promise<Reader> {
  const Native = (globalThis as { BarcodeDetector?: BarcodeDetectorClass }).BarcodeDetector;
  if (Native) {
    const detector = new Native({ formats: ["qr_code"] });
    return async (video) => (await detector.detect(video)).map((found) => found.rawValue);
  }
  const zxing = await import("zxing-wasm/reader");
  zxing.setZXingModuleOverrides({
    locateFile: (path: string, prefix: string) => (path.endsWith(".wasm") ? __ZXING_WASM__ : prefix + path),
  });
  const canvas = document.createElement("canvas");
  const context = canvas.getContext("2d", { willReadFrequently: true });
  return async (video) => {
    if (!context || video.videoWidth === 0) return [];
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    context.drawImage(video, 0, 0);
    const frame = context.getImageData(0, 0, canvas.width, canvas.height);
    const found = await zxing.readBarcodes(frame, { formats: ["QRCode"], maxNumberOfSymbols: 1 });
    return found.filter((result) => result.isValid).map((result) => result.text);
  };
}

/** Whether this browser has a camera to scan with. */
export function canScan(): boolean {
  return !!navigator.mediaDevices?.getUserMedia;
}

/**
 * Scans with the rear camera into `video` until a QR code with a label code is seen or `signal`
 * aborts; resolves with the code (undefined when stopped). Rejects when the camera cannot be used.
 */
export async function scan(video: HTMLVideoElement, signal: AbortSignal): Promise<string | undefined> {
  const read = await reader();
  const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
  try {
    video.srcObject = stream;
    await video.play();
    while (!signal.aborted) {
      const texts = await read(video).catch(() => []);
      for (const text of texts) {
        const code = codeFromQr(text);
        if (code) return code;
      }
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    return undefined;
  } finally {
    for (const track of stream.getTracks()) track.stop();
    video.srcObject = null;
  }
}
